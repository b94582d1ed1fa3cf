//! The metrics operators run memtrace by, read from the `/metrics` of real
//! processes after the events that move them: a worker's Arc calls (timed,
//! failures by kind, write sizes), group-commit batches (rows, time), the
//! dedup index (hits, misses, in-request duplicates), admission refusals by
//! reason (the client sees one "invalid API key"; the operator sees why),
//! and the control plane's publications and reconciliation passes. The
//! stand-in answers instantly (behaviour, not figures).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_tests::api::Api;
use memtrace_tests::arc::{Fault, Target};
use memtrace_tests::cluster::{Cluster, arc_with_token};
use memtrace_tests::grpc::get_text;
use memtrace_tests::metrics::sample;
use serde_json::json;

const PREFIX: &str = "/memtrace-operational-metrics/v1/";
const ARC_TOKEN: &str = "arc-metrics-token-0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_and_control_plane_export_what_operators_watch() {
    let c = Cluster::start(PREFIX).await.unwrap();
    let arc = arc_with_token(ARC_TOKEN, "metrics").await.unwrap();
    let org = c.org("metered").await.unwrap();
    c.add_arc(&org, &arc.url(), "metrics", Some(ARC_TOKEN))
        .await
        .unwrap();
    let (key, _) = c.key(&org, "read,write").await.unwrap();
    let worker = c.worker("metered", &[]).await.unwrap();
    c.wait_in_sync(&worker).await.unwrap();
    let api = Api::new(&worker, Some(&key));

    // a batch with a repeated dedup key, then the same key again: one
    // in-request duplicate, one index hit
    let (s, b) = api
        .post(
            "/api/v1/memories",
            json!({"memories": [
                {"agent_id": "m", "content": "first", "dedup_key": "k1"},
                {"agent_id": "m", "content": "again", "dedup_key": "k1"},
                {"agent_id": "m", "content": "other", "dedup_key": "k2"},
            ]}),
        )
        .await;
    assert!(s == 200 || s == 201, "{s} {b}");
    let (s, b) = api
        .post(
            "/api/v1/memories",
            json!({"agent_id": "m", "content": "late", "dedup_key": "k1"}),
        )
        .await;
    assert_eq!(s, 409, "{b}");
    // a read (an Arc query), and one the stand-in fails with a 500 every time
    let (s, b) = api.get("/api/v1/memories?agent_id=m").await;
    assert_eq!(s, 200, "{b}");
    arc.faults().inject(Fault::status(500).on(Target::Queries));
    let (s, _) = api.get("/api/v1/memories?agent_id=m").await;
    assert!(s >= 500, "{s}");
    arc.faults().clear();
    // refusals: no key, a malformed key, a well-formed unknown key
    for token in [None, Some("not-a-key")] {
        let (s, _) = Api::new(&worker, token).get("/api/v1/memories").await;
        assert_eq!(s, 401);
    }
    let unknown = memtrace_common::credentials::generate_api_key().token;
    let (s, _) = Api::new(&worker, Some(&unknown))
        .get("/api/v1/memories")
        .await;
    assert_eq!(s, 401);

    let text = get_text(&worker.url(), "/metrics").await;
    for (name, labels, at_least) in [
        (
            "memtrace_arc_request_duration_seconds_count",
            vec![r#"op="write""#],
            1.0,
        ),
        (
            "memtrace_arc_request_duration_seconds_count",
            vec![r#"op="query""#],
            2.0,
        ),
        (
            "memtrace_arc_request_errors_total",
            vec![r#"op="query""#, r#"kind="server""#],
            1.0,
        ),
        ("memtrace_arc_write_bytes_count", vec![], 1.0),
        ("memtrace_ingest_batch_rows_count", vec![], 1.0),
        ("memtrace_ingest_batch_rows_sum", vec![], 2.0),
        ("memtrace_ingest_batch_seconds_count", vec![], 1.0),
        ("memtrace_dedup_misses_total", vec![], 2.0),
        ("memtrace_dedup_hits_total", vec![], 1.0),
        ("memtrace_dedup_in_request_duplicates_total", vec![], 1.0),
        ("memtrace_dedup_keys", vec![], 2.0),
        (
            "memtrace_admission_refusals_total",
            vec![r#"reason="key_missing""#],
            1.0,
        ),
        (
            "memtrace_admission_refusals_total",
            vec![r#"reason="malformed""#],
            1.0,
        ),
        (
            "memtrace_admission_refusals_total",
            vec![r#"reason="unknown""#],
            1.0,
        ),
    ] {
        let value = sample(&text, name, &labels);
        assert!(
            value >= at_least,
            "{name}{labels:?} = {value}, expected >= {at_least}\n{text}"
        );
    }
    assert_eq!(
        sample(
            &text,
            "memtrace_arc_request_errors_total",
            &[r#"op="write""#]
        ),
        0.0,
        "no write failed\n{text}"
    );
    assert!(
        text.contains("# TYPE memtrace_snapshot_bus_errors counter"),
        "{text}"
    );
    assert!(!text.contains(&org), "no org id in a label\n{text}");

    // the control plane: its reconciler's passes (repairs are asserted
    // where etcd loses state: tests/tests/distribution.rs) and the admin
    // calls above, published
    let cp = get_text(&c.control_plane.url(), "/metrics").await;
    assert!(
        sample(&cp, "memtrace_reconcile_passes_total", &[]) >= 1.0,
        "{cp}"
    );
    assert!(
        sample(&cp, "memtrace_publications_total", &[r#"outcome="ok""#]) >= 3.0,
        "org, arc binding, key\n{cp}"
    );
    assert_eq!(
        sample(
            &cp,
            "memtrace_publications_total",
            &[r#"outcome="deferred""#]
        ),
        0.0,
        "{cp}"
    );
    assert!(
        cp.contains("# TYPE memtrace_state_bus_errors counter"),
        "{cp}"
    );
}
