//! The data plane's Arc client (`memtrace_data_plane::arcdb`) against the
//! in-process Arc stand-in: columnar writes in every compression read back
//! through the SQL builder column by column, auth refusals that are not
//! retried, bounded retries on 503, timeouts on a stalled Arc, Arc's error
//! messages on failed queries, and the headers each call carries.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_data_plane::arcdb::{
    ArcClient, ArcError, ArcTarget, Compression, MemoryBatch, RetryPolicy, Transport, compress,
};
use memtrace_data_plane::query::{
    Dialect, Ident, ListParams, ListQuery, MEMORY_COLUMNS, OrgId, QueryBuilder, Sql, UnixMicros,
};
use memtrace_data_plane::store::MemoryRow;
use memtrace_tests::arc::{ArcStandIn, CostModel, Fault, Target, TokenGrant, parse_timestamp};
use std::time::{Duration, Instant};

const TOKEN: &str = "tok_acme_0123456789abcdefghijklmnopqrstuv";
const DB: &str = "acme";
const MEASUREMENT: &str = "memories";
/// 2026-11-25T12:00:00Z.
const T0: i64 = 1_795_608_000_000_000;

/// Answers instantly (`CostModel::instant()`): behaviour, not time.
async fn arc() -> ArcStandIn {
    ArcStandIn::builder()
        .cost_model(CostModel::instant())
        .token(TOKEN, TokenGrant::databases([DB]))
        .start()
        .await
        .unwrap()
}

fn client(request_timeout: Duration) -> ArcClient {
    ArcClient::new(Duration::from_secs(2), request_timeout).unwrap()
}

fn target<'a>(url: &'a str, key: Option<&'a str>) -> ArcTarget<'a> {
    ArcTarget {
        url,
        database: DB,
        measurement: MEASUREMENT,
        api_key: key,
    }
}

fn rows(org: &str, n: i64) -> Vec<MemoryRow> {
    let contents = [
        "plain",
        "héllo ✓ \"quoted\" it's",
        "drop table users; -- not an attack",
        "ends with a backslash \\",
        "",
    ];
    (0..n)
        .map(|i| MemoryRow {
            time: T0 + i * 1_500,
            id: format!("mem_{org}_{i}"),
            org_id: org.into(),
            agent_id: format!("agent_{}", i % 3),
            session_id: if i % 2 == 0 {
                String::new()
            } else {
                "sess_1".into()
            },
            memory_type: "episodic".into(),
            event_type: "general".into(),
            content: contents[i as usize % contents.len()].into(),
            metadata_json: format!(r#"{{"i":{i}}}"#).into(),
            tags_csv: if i % 2 == 0 {
                "a,b".into()
            } else {
                String::new()
            },
            dedup_key: format!("dk_{i}"),
            importance: [1.0, 0.25, 0.0][i as usize % 3],
            parent_id: String::new(),
            // 2100-01-01 when set: never expired when read
            expires_at: if i % 4 == 0 {
                0
            } else {
                4_102_444_800_000_000 + i
            },
        })
        .collect()
}

fn body(rows: &[MemoryRow], compression: Compression) -> Vec<u8> {
    let mut batch = MemoryBatch::new();
    for r in rows {
        batch.push(r);
    }
    compress(&batch.encode(MEASUREMENT), compression).unwrap()
}

fn list_sql(org: &str) -> Sql {
    let builder = QueryBuilder::new(
        Dialect::Arc {
            database: Ident::database(DB).unwrap(),
        },
        OrgId::parse(org).unwrap(),
        Ident::table(MEASUREMENT).unwrap(),
    );
    let q = ListQuery::parse(&ListParams {
        limit: Some(100),
        order: Some("asc".into()),
        ..ListParams::default()
    })
    .unwrap();
    builder.collapsed_page(
        &q.page(),
        Some(Duration::from_secs(86_400)),
        UnixMicros(T0 + 3_600_000_000),
    )
}

/// A `time` value as µs: Arc (and the stand-in) render `TIMESTAMP`s as
/// RFC 3339 strings, including the builder's re-selected `MAX(v.time)`.
fn time_us(v: &serde_json::Value) -> Option<i64> {
    v.as_str().and_then(parse_timestamp)
}

fn fast_retries(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        base: Duration::from_millis(10),
        max: Duration::from_millis(40),
        max_elapsed: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn writes_in_every_compression_read_back_column_by_column() {
    let arc = arc().await;
    let url = arc.url();
    let t = target(&url, Some(TOKEN));
    let c = client(Duration::from_secs(10));
    for (org, compression, encoding) in [
        ("org_gzip", Compression::Gzip, Some("gzip")),
        ("org_zstd", Compression::Zstd, Some("zstd")),
        ("org_none", Compression::None, None),
    ] {
        let written = rows(org, 25);
        c.write(&t, body(&written, compression).into(), compression)
            .await
            .unwrap();
        let req = arc.last_request().unwrap();
        let h = |name: &str| {
            req.headers
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
        };
        assert_eq!(req.path, "/api/v1/write/msgpack");
        assert_eq!(h("content-type").as_deref(), Some("application/msgpack"));
        assert_eq!(h("content-encoding").as_deref(), encoding);
        assert_eq!(h("x-arc-database").as_deref(), Some(DB));
        assert_eq!(h("authorization"), Some(format!("Bearer {TOKEN}")));

        let result = c.query(&t, &list_sql(org)).await.unwrap();
        let req = arc.last_request().unwrap();
        assert_eq!(req.path, "/api/v1/query");
        assert!(
            req.headers.get("x-arc-database").is_none(),
            "query sent x-arc-database"
        );
        assert_eq!(result.columns, MEMORY_COLUMNS);
        assert_eq!(result.rows.len(), written.len(), "{org}");
        for (got, want) in result.into_maps().iter().zip(&written) {
            assert_eq!(time_us(&got["time"]), Some(want.time), "{org} time");
            let strings = [
                ("id", &*want.id),
                ("org_id", &*want.org_id),
                ("agent_id", &*want.agent_id),
                ("session_id", &*want.session_id),
                ("memory_type", &*want.memory_type),
                ("event_type", &*want.event_type),
                ("content", &*want.content),
                ("metadata_json", &*want.metadata_json),
                ("tags_csv", &*want.tags_csv),
                ("dedup_key", &*want.dedup_key),
                ("parent_id", &*want.parent_id),
            ];
            for (col, value) in strings {
                assert_eq!(got[col].as_str(), Some(value), "{org} {col}");
            }
            assert_eq!(got["importance"].as_f64(), Some(want.importance));
            assert_eq!(got["expires_at"].as_i64(), Some(want.expires_at), "{org}");
        }
    }
    let stats = arc.stats();
    assert_eq!(stats.db(DB).rows, 75);
    assert_eq!(stats.write_requests, 3);
}

#[tokio::test]
async fn wrong_token_is_rejected_once_and_never_echoed() {
    let arc = arc().await;
    let url = arc.url();
    let c = client(Duration::from_secs(10));
    let secret = "wrong_but_secret_token_value";
    let t = target(&url, Some(secret));
    let payload = body(&rows("org_a", 3), Compression::Zstd);
    let err = c
        .write_with_retry(&t, payload.into(), Compression::Zstd, &fast_retries(5))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ArcError::Rejected { status: 401, .. }),
        "{err:?}"
    );
    assert!(!err.retryable());
    assert_eq!(arc.stats().write_requests, 1, "a 401 must not be retried");
    for text in [err.to_string(), format!("{err:?}"), format!("{t:?}")] {
        assert!(!text.contains(secret), "key leaked: {text}");
    }

    let err = c.query(&t, &list_sql("org_a")).await.unwrap_err();
    assert!(
        matches!(err, ArcError::Rejected { status: 401, .. }),
        "{err:?}"
    );
    assert!(!err.to_string().contains(secret));
}

#[tokio::test]
async fn two_503s_then_success_takes_three_attempts() {
    let arc = arc().await;
    let url = arc.url();
    let c = client(Duration::from_secs(10));
    arc.faults()
        .inject(Fault::status(503).on(Target::Writes).times(2));
    let payload = body(&rows("org_a", 10), Compression::Gzip);
    c.write_with_retry(
        &target(&url, Some(TOKEN)),
        payload.into(),
        Compression::Gzip,
        &fast_retries(4),
    )
    .await
    .unwrap();
    let stats = arc.stats();
    assert_eq!(stats.write_requests, 3);
    assert_eq!(stats.status(503), 2);
    assert_eq!(stats.db(DB).rows, 10);
}

#[tokio::test]
async fn permanent_503_fails_after_max_attempts_in_bounded_time() {
    let arc = arc().await;
    let url = arc.url();
    let c = client(Duration::from_secs(10));
    arc.faults().inject(Fault::status(503).on(Target::Writes));
    let started = Instant::now();
    let err = c
        .write_with_retry(
            &target(&url, Some(TOKEN)),
            body(&rows("org_a", 2), Compression::None).into(),
            Compression::None,
            &fast_retries(3),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ArcError::Server { status: 503, .. }),
        "{err:?}"
    );
    assert!(err.retryable());
    assert_eq!(arc.stats().write_requests, 3);
    // Two backoffs of at most 10 ms and 20 ms, plus three loopback requests.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn retry_budget_caps_total_time() {
    let arc = arc().await;
    let url = arc.url();
    let c = client(Duration::from_secs(10));
    arc.faults().inject(Fault::status(500).on(Target::Writes));
    let policy = RetryPolicy {
        max_attempts: 1000,
        base: Duration::from_millis(20),
        max: Duration::from_millis(50),
        max_elapsed: Duration::from_millis(300),
    };
    let started = Instant::now();
    let err = c
        .write_with_retry(
            &target(&url, Some(TOKEN)),
            body(&rows("org_a", 1), Compression::None).into(),
            Compression::None,
            &policy,
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(500));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(arc.stats().write_requests < 100);
}

#[tokio::test]
async fn stalled_arc_times_out_within_the_request_timeout() {
    let arc = arc().await;
    let url = arc.url();
    let timeout = Duration::from_millis(300);
    let c = client(timeout);
    arc.faults().inject(Fault::stall().on(Target::Writes));
    let started = Instant::now();
    let err = c
        .write(
            &target(&url, Some(TOKEN)),
            body(&rows("org_a", 1), Compression::Zstd).into(),
            Compression::Zstd,
        )
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(err.is_timeout(), "{err:?}");
    assert!(err.retryable());
    assert!(took >= timeout - Duration::from_millis(20), "{took:?}");
    assert!(took < timeout + Duration::from_millis(700), "{took:?}");
    arc.faults().clear();
}

#[tokio::test]
async fn dropped_connections_and_refused_connects_are_unreachable() {
    let arc = arc().await;
    let url = arc.url();
    let c = client(Duration::from_secs(5));
    arc.faults()
        .inject(Fault::drop_connection().on(Target::Writes).times(1));
    let payload = body(&rows("org_a", 4), Compression::Zstd);
    let t = target(&url, Some(TOKEN));
    let err = c
        .write(&t, payload.clone().into(), Compression::Zstd)
        .await
        .unwrap_err();
    assert!(matches!(err, ArcError::Unreachable { .. }), "{err:?}");
    assert!(err.retryable());
    c.write_with_retry(&t, payload.into(), Compression::Zstd, &fast_retries(3))
        .await
        .unwrap();
    assert_eq!(arc.stats().db(DB).rows, 4);

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let err = c.health(&closed).await.unwrap_err();
    assert!(
        matches!(
            err,
            ArcError::Unreachable {
                kind: Transport::Connect,
                ..
            }
        ),
        "{err:?}"
    );
    c.health(&url).await.unwrap();
}

#[tokio::test]
async fn query_errors_carry_arcs_message() {
    let arc = arc().await;
    let url = arc.url();
    let c = client(Duration::from_secs(10));
    let t = target(&url, Some(TOKEN));
    // Nothing written yet: Arc finds no files for the table.
    let err = c.query(&t, &list_sql("org_a")).await.unwrap_err();
    match &err {
        ArcError::Server { status, message } => {
            assert_eq!(*status, 500);
            assert!(message.contains("Query execution failed"), "{message}");
        }
        other => panic!("expected a 500, got {other:?}"),
    }
    assert!(
        arc.last_request()
            .unwrap()
            .headers
            .get("x-arc-database")
            .is_none()
    );

    // A token for another database may not read this one.
    arc.set_token("tok_other", TokenGrant::databases(["other"]));
    let err = c
        .query(&target(&url, Some("tok_other")), &list_sql("org_a"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ArcError::Rejected { status: 403, ref message } if !message.is_empty()),
        "{err:?}"
    );

    // Transient query failures are retried like writes.
    c.write(
        &t,
        body(&rows("org_a", 2), Compression::Zstd).into(),
        Compression::Zstd,
    )
    .await
    .unwrap();
    arc.faults()
        .inject(Fault::status(502).on(Target::Queries).times(1));
    let result = c
        .query_with_retry(&t, &list_sql("org_a"), &fast_retries(3))
        .await
        .unwrap();
    assert_eq!(result.rows.len(), 2);
    assert_eq!(arc.stats().query_requests, 4);
}
