//! Arc's delete API on the stand-in (`POST /api/v1/delete`): the confirm
//! and dry-run rules, the counts of rows and files, rows really gone from
//! queries, rows still in the ingest buffer left alone until a delete after
//! their flush, unknown databases, the `delete` permission, deletes
//! disabled, Arc's predicate checks, faults and the modelled cost; then the
//! data plane's typed client (`ArcClient::delete`) against it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_data_plane::arcdb::{
    ArcClient, ArcError, ArcTarget, DeleteBlock, DeleteOutcome, DeleteRequest, RetryPolicy,
};
use memtrace_tests::arc::client::{RawArcClient, msgpack};
use memtrace_tests::arc::delete::{CONFIRMATION_REQUIRED, DISABLED};
use memtrace_tests::arc::{ArcStandIn, Buffering, CostModel, Fault, Target, TokenGrant};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const DB: &str = "acme";
const M: &str = "memories";
/// 2025-01-01T00:00:00Z in microseconds.
const T0: i64 = 1_735_689_600_000_000;

/// `n` rows of `org`, a second apart from `T0 + at` seconds.
fn rows(org: &str, n: i64, at: i64) -> Vec<u8> {
    let times: Vec<i64> = (0..n).map(|i| T0 + (at + i) * 1_000_000).collect();
    msgpack(&json!({"m": M, "columns": {
        "time": times,
        "org_id": vec![org; n as usize],
        "n": (0..n).collect::<Vec<_>>(),
    }}))
}

async fn write(c: &RawArcClient, body: Vec<u8>) {
    let (status, text) = c.write(Some(DB), body).await.unwrap();
    assert_eq!(status, 204, "{text}");
}

/// Rows of `org` a query sees.
async fn count(c: &RawArcClient, org: &str) -> i64 {
    let (status, out) = c
        .query(
            Some(DB),
            &format!("SELECT COUNT(*) AS n FROM {M} WHERE org_id = '{org}'"),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{out}");
    out["data"][0][0].as_i64().unwrap()
}

fn delete_body(predicate: &str, dry_run: bool, confirm: bool) -> Value {
    json!({"database": DB, "measurement": M, "where": predicate,
           "dry_run": dry_run, "confirm": confirm})
}

async fn delete(c: &RawArcClient, predicate: &str, dry_run: bool, confirm: bool) -> (u16, Value) {
    c.delete(&delete_body(predicate, dry_run, confirm))
        .await
        .unwrap()
}

/// (deleted_count, affected_files, rewritten_files, dry_run) of a 200.
fn counts(out: &Value) -> (u64, u64, u64, bool) {
    assert_eq!(out["success"], true, "{out}");
    (
        out["deleted_count"].as_u64().unwrap(),
        out["affected_files"].as_u64().unwrap(),
        out["rewritten_files"].as_u64().unwrap(),
        out["dry_run"].as_bool().unwrap(),
    )
}

/// Three files: `a` ×3 | `b` ×3 | `a` ×2 + `b` ×1 (the last one the open
/// buffer, readable at once with the visibility delay off).
async fn three_files(arc: &ArcStandIn, c: &RawArcClient) {
    write(c, rows("a", 3, 0)).await;
    arc.flush_buffers().unwrap();
    write(c, rows("b", 3, 10)).await;
    arc.flush_buffers().unwrap();
    write(c, rows("a", 2, 20)).await;
    write(c, rows("b", 1, 30)).await;
}

#[tokio::test]
async fn confirm_dry_run_and_counts_follow_arc() {
    let arc = ArcStandIn::start().await.unwrap();
    let c = RawArcClient::new(arc.url());
    three_files(&arc, &c).await;

    // neither confirm nor dry_run: refused, nothing deleted
    let (status, out) = delete(&c, "org_id = 'a'", false, false).await;
    assert_eq!(status, 400, "{out}");
    assert_eq!(out["error"], CONFIRMATION_REQUIRED);
    assert!(out["error"].as_str().unwrap().contains("confirm"));
    assert_eq!(count(&c, "a").await, 5);

    // a dry run counts, touches nothing, needs no confirm
    let (status, out) = delete(&c, "org_id = 'a'", true, false).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(counts(&out), (5, 2, 0, true));
    assert_eq!(out["files_processed"].as_array().unwrap().len(), 2, "{out}");
    assert_eq!(count(&c, "a").await, 5);

    // a whole-table predicate needs confirm even for a dry run
    let (status, out) = delete(&c, "1=1", true, false).await;
    assert_eq!(status, 400, "{out}");
    assert!(
        out["error"].as_str().unwrap().contains("confirm=true"),
        "{out}"
    );

    // confirmed: the rows are gone from queries, the others stay
    let (status, out) = delete(&c, "org_id = 'a'", false, true).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(counts(&out), (5, 2, 2, false));
    assert_eq!((count(&c, "a").await, count(&c, "b").await), (0, 4));
    assert_eq!(arc.row_count(DB, M), 4);
    let left: Vec<String> = arc
        .rows(DB, M)
        .await
        .unwrap()
        .iter()
        .map(|r| r["org_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left, ["b", "b", "b", "b"]);
    assert_eq!(
        (arc.stats().db(DB).deletes, arc.stats().db(DB).deleted_rows),
        (1, 5)
    );

    // again: nothing more to delete
    let (_, out) = delete(&c, "org_id = 'a'", false, true).await;
    assert_eq!(counts(&out), (0, 0, 0, false));

    // time literals work as in queries: b's rows at T0+10 s and T0+11 s
    let (status, out) = delete(
        &c,
        "org_id = 'b' AND time < '2025-01-01T00:00:12Z'",
        false,
        true,
    )
    .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(counts(&out), (2, 1, 1, false));
    assert_eq!(count(&c, "b").await, 2);

    // the whole table, confirmed; then the measurement has no files at all
    let (_, out) = delete(&c, "1=1", false, true).await;
    assert_eq!(counts(&out), (2, 2, 2, false));
    assert_eq!(arc.last_request().unwrap().path, "/api/v1/delete");
    assert_eq!(arc.row_count(DB, M), 0);
    let (status, out) = c
        .query(Some(DB), &format!("SELECT COUNT(*) FROM {M}"))
        .await
        .unwrap();
    assert_eq!(status, 500, "{out}");
    assert!(
        out["error"].as_str().unwrap().contains("No files found"),
        "{out}"
    );

    // the calls were recorded, with what they asked and what they got
    let calls = arc.delete_calls();
    assert_eq!(calls.len(), 7);
    assert_eq!(
        (
            calls[0].predicate.as_str(),
            calls[0].confirm,
            calls[0].status
        ),
        ("org_id = 'a'", false, Some(400))
    );
    assert_eq!(
        (calls[3].status, calls[3].deleted_count),
        (Some(200), Some(5))
    );
    assert_eq!(arc.stats().delete_requests, 7);
}

#[tokio::test]
async fn buffered_rows_are_deleted_only_after_their_flush() {
    // visibility delay on; buffers flush only when told (or by 1,000 rows)
    let arc = ArcStandIn::builder()
        .buffering(Buffering {
            max_age: Duration::from_secs(3600),
            max_rows: 1_000,
        })
        .visibility_delay(true)
        .start()
        .await
        .unwrap();
    let c = RawArcClient::new(arc.url());
    write(&c, rows("a", 3, 0)).await;
    arc.flush_buffers().unwrap();
    write(&c, rows("a", 4, 10)).await; // held in the buffer
    assert_eq!(arc.buffered_rows(DB, M), 4);

    let (status, out) = delete(&c, "org_id = 'a'", false, true).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(counts(&out), (3, 1, 1, false));
    assert_eq!(arc.buffered_rows(DB, M), 4, "the buffer is not touched");

    // after the flush the buffered rows show up: the delete missed them
    assert_eq!(arc.flush_buffers().unwrap(), 4);
    assert_eq!(count(&c, "a").await, 4);

    // a delete after the flush removes them
    let (_, out) = delete(&c, "org_id = 'a'", false, true).await;
    assert_eq!(counts(&out), (4, 1, 1, false));
    assert_eq!(arc.row_count(DB, M), 0);

    // all rows still buffered: no file yet, nothing deleted
    write(&c, rows("a", 2, 20)).await;
    let (_, out) = delete(&c, "org_id = 'a'", false, true).await;
    assert_eq!(counts(&out), (0, 0, 0, false));
    arc.flush_buffers().unwrap();
    assert_eq!(count(&c, "a").await, 2);
}

#[tokio::test]
async fn files_are_counted_right_when_rows_are_written_after_a_delete() {
    let arc = ArcStandIn::start().await.unwrap();
    let c = RawArcClient::new(arc.url());
    write(&c, rows("a", 3, 0)).await;
    arc.flush_buffers().unwrap();
    write(&c, rows("b", 2, 10)).await; // the open buffer
    let (_, out) = delete(&c, "org_id IN ('a', 'b')", false, true).await;
    assert_eq!(counts(&out), (5, 2, 2, false));
    // the table is empty: new rows take the lowest row ids again
    write(&c, rows("c", 2, 20)).await;
    let (_, out) = delete(&c, "org_id = 'c'", true, false).await;
    assert_eq!(counts(&out), (2, 1, 0, true));
    arc.flush_buffers().unwrap();
    write(&c, rows("d", 1, 30)).await;
    let (_, out) = delete(&c, "org_id IN ('c', 'd')", false, true).await;
    assert_eq!(counts(&out), (3, 2, 2, false));
    assert_eq!(arc.row_count(DB, M), 0);
}

#[tokio::test]
async fn unknown_databases_measurements_and_columns_delete_nothing() {
    let arc = ArcStandIn::start().await.unwrap();
    let c = RawArcClient::new(arc.url());
    write(&c, rows("a", 3, 0)).await;
    for body in [
        json!({"database": "nope", "measurement": M, "where": "org_id = 'a'", "confirm": true}),
        json!({"database": DB, "measurement": "nope", "where": "org_id = 'a'", "confirm": true}),
        // Arc skips the files it cannot evaluate the predicate on
        json!({"database": DB, "measurement": M, "where": "no_such_column = 'a'", "confirm": true}),
        json!({"database": DB, "measurement": M, "where": "time < 'not a time'", "confirm": true}),
    ] {
        let (status, out) = c.delete(&body).await.unwrap();
        assert_eq!(status, 200, "{body}: {out}");
        assert_eq!(counts(&out), (0, 0, 0, false), "{body}");
    }
    assert_eq!(count(&c, "a").await, 3);
}

#[tokio::test]
async fn the_delete_permission_is_required() {
    let arc = ArcStandIn::builder()
        .token("plain", TokenGrant::databases([DB]))
        .token("deleter", TokenGrant::databases([DB]).with_delete())
        .token("elsewhere", TokenGrant::databases(["other"]).with_delete())
        .token("admin", TokenGrant::any())
        .start()
        .await
        .unwrap();
    let c = RawArcClient::new(arc.url());
    write(
        &c.with_auth("authorization", "Bearer admin"),
        rows("a", 4, 0),
    )
    .await;

    let (status, out) = delete(&c, "n = 0", false, true).await;
    assert_eq!(status, 401, "{out}");
    let plain = c.with_auth("authorization", "Bearer plain");
    let (status, out) = delete(&plain, "n = 0", false, true).await;
    assert_eq!(status, 403, "{out}");
    assert_eq!(out["error"], "Permission denied: delete required");
    // a dry run needs it too
    let (status, _) = delete(&plain, "n = 0", true, false).await;
    assert_eq!(status, 403);
    let (status, out) = delete(
        &c.with_auth("authorization", "Bearer elsewhere"),
        "n = 0",
        false,
        true,
    )
    .await;
    assert_eq!(status, 403, "{out}");
    assert!(
        out["error"]
            .as_str()
            .unwrap()
            .contains("delete permission for database 'acme'"),
        "{out}"
    );
    assert_eq!(arc.row_count(DB, M), 4, "nothing deleted");

    let (status, out) = delete(
        &c.with_auth("authorization", "Bearer deleter"),
        "n = 0",
        false,
        true,
    )
    .await;
    assert_eq!((status, counts(&out).0), (200, 1), "{out}");
    let (status, out) = delete(&c.with_auth("x-api-key", "admin"), "n = 1", false, true).await;
    assert_eq!((status, counts(&out).0), (200, 1), "{out}");
    // read and write are what they were
    let (status, _) = plain
        .query(Some(DB), &format!("SELECT * FROM {M}"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(!TokenGrant::any().read_only().delete);
    assert_eq!(arc.row_count(DB, M), 2);
}

#[tokio::test]
async fn disabled_deletes_are_refused() {
    let arc = ArcStandIn::builder()
        .deletes_enabled(false)
        .token("admin", TokenGrant::any())
        .start()
        .await
        .unwrap();
    let c = RawArcClient::new(arc.url()).with_auth("authorization", "Bearer admin");
    write(&c, rows("a", 3, 0)).await;
    for dry_run in [false, true] {
        let (status, out) = delete(&c, "org_id = 'a'", dry_run, true).await;
        assert_eq!(status, 403, "{out}");
        assert_eq!(out["error"], DISABLED);
        assert!(out["error"].as_str().unwrap().contains("disabled"));
    }
    assert_eq!(count(&c, "a").await, 3);
    arc.set_deletes_enabled(true);
    let (status, out) = delete(&c, "org_id = 'a'", false, true).await;
    assert_eq!((status, counts(&out).0), (200, 3), "{out}");
}

#[tokio::test]
async fn dangerous_or_malformed_requests_are_refused() {
    let arc = ArcStandIn::start().await.unwrap();
    let c = RawArcClient::new(arc.url());
    write(&c, rows("a", 3, 0)).await;
    for (predicate, why) in [
        ("", "WHERE clause is required"),
        ("org_id = 'a'; DROP TABLE memories", "forbidden pattern: ;"),
        ("org_id = 'a' -- and more", "forbidden pattern: --"),
        (
            "org_id IN (SELECT org_id FROM memories)",
            "forbidden keyword: SELECT",
        ),
        ("org_id = 'a' OR 1=1 UNION x", "forbidden keyword: UNION"),
        ("org_id = 'a", "unmatched quotes"),
        ("(org_id = 'a'", "unmatched parentheses"),
    ] {
        let (status, out) = delete(&c, predicate, false, true).await;
        assert_eq!(status, 400, "{predicate}: {out}");
        assert_eq!(out["success"], false);
        assert!(
            out["error"].as_str().unwrap().contains(why),
            "{predicate}: {out}"
        );
    }
    for (body, why) in [
        (
            json!({"measurement": M, "where": "n = 1", "confirm": true}),
            "database is required",
        ),
        (
            json!({"database": DB, "where": "n = 1", "confirm": true}),
            "measurement is required",
        ),
        (
            json!({"database": "../x", "measurement": M, "where": "n = 1", "confirm": true}),
            "invalid characters",
        ),
        (
            json!({"database": DB, "measurement": M, "where": "n = 1", "confirm": "yes"}),
            "Invalid request body",
        ),
    ] {
        let (status, out) = c.delete(&body).await.unwrap();
        assert_eq!(status, 400, "{body}: {out}");
        assert!(
            out["error"].as_str().unwrap().contains(why),
            "{body}: {out}"
        );
    }
    assert_eq!(count(&c, "a").await, 3);
}

#[tokio::test]
async fn faults_apply_to_deletes() {
    let arc = ArcStandIn::start().await.unwrap();
    let c = RawArcClient::new(arc.url());
    write(&c, rows("a", 6, 0)).await;

    // aimed at writes: deletes pass
    arc.faults().inject(Fault::status(503).on(Target::Writes));
    let (status, _) = delete(&c, "n = 0", false, true).await;
    assert_eq!(status, 200);
    arc.faults().clear();

    // refused before processing: nothing deleted
    arc.faults()
        .inject(Fault::status(503).on(Target::Deletes).times(1));
    let (status, out) = delete(&c, "n = 1", false, true).await;
    assert_eq!(status, 503, "{out}");
    assert_eq!(arc.row_count(DB, M), 5);
    // a query is not hit by a delete fault
    assert_eq!(count(&c, "a").await, 5);

    // failed after processing: the rows are gone all the same
    arc.faults().inject(
        Fault::status_after_processing(500)
            .on(Target::Deletes)
            .times(1),
    );
    let (status, _) = delete(&c, "n = 1", false, true).await;
    assert_eq!(status, 500);
    assert_eq!(arc.row_count(DB, M), 4);

    // reset after processing: no answer, rows gone
    arc.faults()
        .inject(Fault::reset_after_processing().on(Target::Deletes).times(1));
    assert!(c.delete(&delete_body("n = 2", false, true)).await.is_err());
    assert_eq!(arc.row_count(DB, M), 3);

    // a stall holds the delete until released, then it runs
    arc.faults()
        .inject(Fault::stall().on(Target::Deletes).times(1));
    let stalled = {
        let c = c.clone();
        tokio::spawn(async move { c.delete(&delete_body("n = 3", false, true)).await })
    };
    assert!(arc.faults().wait_stalled(1, Duration::from_secs(5)).await);
    assert_eq!(arc.row_count(DB, M), 3, "not yet");
    arc.faults().release_stalls();
    let (status, out) = stalled.await.unwrap().unwrap();
    assert_eq!((status, counts(&out).0), (200, 1), "{out}");

    let statuses: Vec<Option<u16>> = arc.delete_calls().iter().map(|d| d.status).collect();
    assert_eq!(statuses, [Some(200), Some(503), Some(500), None, Some(200)]);
}

#[tokio::test]
async fn a_delete_costs_a_scan_plus_its_file_rewrites() {
    let model = CostModel {
        rewrite_file: Duration::from_millis(150),
        ..CostModel::instant()
    };
    let arc = ArcStandIn::builder()
        .cost_model(model)
        .start()
        .await
        .unwrap();
    let c = RawArcClient::new(arc.url());
    three_files(&arc, &c).await;

    let started = Instant::now();
    let (_, out) = delete(&c, "org_id = 'a'", true, false).await;
    let dry = started.elapsed();
    assert_eq!(counts(&out), (5, 2, 0, true));
    let started = Instant::now();
    let (_, out) = delete(&c, "org_id = 'a'", false, true).await;
    let real = started.elapsed();
    assert_eq!(counts(&out), (5, 2, 2, false));
    assert!(real >= Duration::from_millis(300), "two rewrites: {real:?}");
    assert!(
        dry < Duration::from_millis(300),
        "a dry run rewrites nothing: {dry:?}"
    );
    assert!(
        ArcStandIn::start().await.unwrap().cost_model().is_instant(),
        "instant by default"
    );
}

// ---- the data plane's client ----

fn target<'a>(url: &'a str, key: Option<&'a str>) -> ArcTarget<'a> {
    ArcTarget {
        url,
        database: DB,
        measurement: M,
        api_key: key,
    }
}

fn client() -> ArcClient {
    ArcClient::new(Duration::from_secs(2), Duration::from_secs(5)).unwrap()
}

#[tokio::test]
async fn data_plane_client_deletes_and_reports_blocked_deletes() {
    let arc = ArcStandIn::builder()
        .token("deleter", TokenGrant::databases([DB]).with_delete())
        .token("plain", TokenGrant::databases([DB]))
        .start()
        .await
        .unwrap();
    let raw = RawArcClient::new(arc.url()).with_auth("authorization", "Bearer deleter");
    three_files(&arc, &raw).await;
    let url = arc.url();
    let client = client();
    let t = target(&url, Some("deleter"));

    let dry = client
        .delete(&t, &DeleteRequest::for_target(&t, "org_id = 'a'").dry_run())
        .await
        .unwrap();
    assert_eq!(
        (
            dry.deleted_count,
            dry.affected_files,
            dry.rewritten_files,
            dry.dry_run
        ),
        (5, 2, 0, true)
    );
    let call = arc.delete_calls().pop().unwrap();
    assert_eq!((call.dry_run, call.confirm), (true, false));
    assert_eq!(count(&raw, "a").await, 5);

    let done: DeleteOutcome = client
        .delete(&t, &DeleteRequest::for_target(&t, "org_id = 'a'"))
        .await
        .unwrap();
    assert_eq!(
        (
            done.deleted_count,
            done.affected_files,
            done.rewritten_files,
            done.dry_run
        ),
        (5, 2, 2, false)
    );
    let call = arc.delete_calls().pop().unwrap();
    assert_eq!(
        (
            call.database.as_str(),
            call.measurement.as_str(),
            call.predicate.as_str()
        ),
        (DB, M, "org_id = 'a'")
    );
    assert_eq!((call.dry_run, call.confirm), (false, true));
    let sent = arc.last_request().unwrap();
    assert_eq!(sent.path, "/api/v1/delete");
    assert_eq!(sent.headers["authorization"], "Bearer deleter");
    assert_eq!(count(&raw, "a").await, 0);

    // the token lacks delete: blocked, with the reason and Arc's message
    let plain = target(&url, Some("plain"));
    let err = client
        .delete(&plain, &DeleteRequest::for_target(&plain, "org_id = 'b'"))
        .await
        .unwrap_err();
    match &err {
        ArcError::DeleteBlocked { reason, message } => {
            assert_eq!(*reason, DeleteBlock::NoDeletePermission);
            assert!(message.contains("delete"), "{message}");
        }
        other => panic!("expected DeleteBlocked, got {other:?}"),
    }
    assert!(!err.retryable());

    // deletes disabled: blocked for that reason, not retried
    arc.set_deletes_enabled(false);
    let before = arc.stats().delete_requests;
    let err = client
        .delete_with_retry(
            &t,
            &DeleteRequest::for_target(&t, "org_id = 'b'"),
            &fast_retries(3),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ArcError::DeleteBlocked { reason: DeleteBlock::DeletesDisabled, message }
            if message == DISABLED),
        "{err:?}"
    );
    assert_eq!(arc.stats().delete_requests, before + 1, "not retried");
    arc.set_deletes_enabled(true);
    assert_eq!(count(&raw, "b").await, 4);

    // a refused predicate is a plain rejection
    let err = client
        .delete(
            &t,
            &DeleteRequest::for_target(&t, "org_id = 'b'; DROP TABLE x"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ArcError::Rejected { status: 400, .. }),
        "{err:?}"
    );

    // a 503 is a server error, and a retry gets the delete through
    arc.faults()
        .inject(Fault::status(503).on(Target::Deletes).times(1));
    let err = client
        .delete(&t, &DeleteRequest::for_target(&t, "org_id = 'b'"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ArcError::Server { status: 503, .. }),
        "{err:?}"
    );
    arc.faults()
        .inject(Fault::status(503).on(Target::Deletes).times(1));
    let done = client
        .delete_with_retry(
            &t,
            &DeleteRequest::for_target(&t, "org_id = 'b'"),
            &fast_retries(3),
        )
        .await
        .unwrap();
    assert_eq!(done.deleted_count, 4);
    assert_eq!(arc.row_count(DB, M), 0);

    // a stalled Arc times out as any call does
    arc.faults()
        .inject(Fault::stall().on(Target::Deletes).times(1));
    let short = ArcClient::new(Duration::from_secs(2), Duration::from_millis(300)).unwrap();
    let err = short
        .delete(&t, &DeleteRequest::for_target(&t, "org_id = 'b'"))
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    arc.faults().clear();
}

fn fast_retries(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        base: Duration::from_millis(10),
        max: Duration::from_millis(20),
        max_elapsed: Duration::from_secs(5),
    }
}
