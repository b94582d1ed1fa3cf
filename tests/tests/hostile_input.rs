//! Hostile input against the real `memtrace-worker`: every request below
//! gets a clear refusal within a bounded time, the worker's peak memory
//! stays bounded while it is refused, and the worker keeps serving others.
//!
//! - gRPC messages of millions of empty repeated strings (2 bytes each on
//!   the wire, 24+ decoded) without a key, with an invalid key, and with a
//!   valid one: refused before they are decoded (UNAUTHENTICATED from the
//!   metadata alone; RESOURCE_EXHAUSTED by the codec's size and count
//!   bounds for an authenticated caller);
//! - REST searches and lists with hundreds of thousands of tags: 400 naming
//!   the field, after a bounded amount of parsing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_proto::v1 as pb;
use memtrace_tests::api::{Api, error_of};
use memtrace_tests::cluster::Cluster;
use memtrace_tests::grpc::{channel, with_key};
use memtrace_tests::load::peak_rss_kib;
use pb::memory_service_client::MemoryServiceClient;
use pb::session_service_client::SessionServiceClient;
use serde_json::json;
use std::time::Duration;
use tonic::Code;

const PREFIX: &str = "/memtrace-hostile/v1/";
/// Longest any refusal below may take (a stalled worker is a failure, not
/// a slow pass); generous for a debug build on a shared machine.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);
/// 4 M empty strings: 8 MB on the wire, ≥ 96 MB once decoded.
const EMPTY_STRINGS: usize = 4_000_000;

/// Runs `call` within [`ANSWER_WITHIN`] and returns its status code and
/// message (a success is a failure of the test).
async fn refused<T: std::fmt::Debug>(
    what: &str,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> (Code, String) {
    let status = tokio::time::timeout(ANSWER_WITHIN, call)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {ANSWER_WITHIN:?}"))
        .expect_err(what);
    (status.code(), status.message().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amplifying_grpc_messages_are_refused_before_they_are_decoded() {
    let c = Cluster::start(PREFIX).await.unwrap();
    let org = c.org("hostile-grpc").await.unwrap();
    let (reader, _) = c.key(&org, "read").await.unwrap();
    let (writer, _) = c.key(&org, "read,write").await.unwrap();
    let embedded = tempfile::tempdir().unwrap();
    let worker = c
        .worker(
            "hostile-grpc",
            &[(
                "MEMTRACE_WORKER_EMBEDDED_DIR",
                embedded.path().to_str().unwrap(),
            )],
        )
        .await
        .unwrap();
    let pid = worker.pid().unwrap();
    let ch = channel(&worker.url()).await;
    let memories = MemoryServiceClient::new(ch.clone()).max_encoding_message_size(64 << 20);
    let sessions = SessionServiceClient::new(ch.clone()).max_encoding_message_size(64 << 20);
    let empty = vec![String::new(); EMPTY_STRINGS];
    let search = pb::SearchMemoriesRequest {
        tags: empty.clone(),
        ..pb::SearchMemoriesRequest::default()
    };
    let peak_before = peak_rss_kib(pid).unwrap();

    // no key, a malformed key, a well-formed unknown key: three times each
    let unknown = memtrace_common::credentials::generate_api_key()
        .token
        .to_string();
    for key in [None, Some("mtk_nope"), Some(unknown.as_str())] {
        for _ in 0..3 {
            let (code, message) = refused(
                "search without a valid key",
                memories
                    .clone()
                    .search_memories(with_key(key, search.clone())),
            )
            .await;
            assert_eq!(code, Code::Unauthenticated, "{message}");
        }
    }
    // with a key: the codec refuses reads past their size bound, and
    // memories past their tag count, before decoding
    let (code, message) = refused(
        "search with a valid key",
        memories
            .clone()
            .search_memories(with_key(Some(&reader), search.clone())),
    )
    .await;
    assert_eq!(code, Code::ResourceExhausted, "{message}");
    assert!(message.contains("at most 262144 bytes"), "{message}");
    let (code, message) = refused(
        "session context with a valid key",
        sessions.clone().get_session_context(with_key(
            Some(&reader),
            pb::SessionContextRequest {
                id: "sess_x".into(),
                include_types: empty.clone(),
                ..pb::SessionContextRequest::default()
            },
        )),
    )
    .await;
    assert_eq!(code, Code::ResourceExhausted, "{message}");
    let (code, message) = refused(
        "one memory with millions of tags",
        memories.clone().create_memory(with_key(
            Some(&writer),
            pb::CreateMemoryRequest {
                memory: Some(pb::MemoryInput {
                    agent_id: "a".into(),
                    content: "c".into(),
                    tags: empty.clone(),
                    ..pb::MemoryInput::default()
                }),
            },
        )),
    )
    .await;
    assert_eq!(code, Code::ResourceExhausted, "{message}");
    assert!(message.contains("too many tags"), "{message}");

    // none of it was decoded: one such message alone would have taken
    // ≥ 96 MB (the worker's peak before the fix grew by over 100 MiB)
    let grown_mib = peak_rss_kib(pid).unwrap().saturating_sub(peak_before) / 1024;
    assert!(
        grown_mib < 48,
        "the worker's peak RSS grew by {grown_mib} MiB while refusing"
    );

    // and it still serves
    let ok = memories
        .clone()
        .search_memories(with_key(
            Some(&reader),
            pb::SearchMemoriesRequest {
                tags: vec!["door".into()],
                ..pb::SearchMemoriesRequest::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.count, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_tag_lists_over_rest_are_refused_after_bounded_parsing() {
    let c = Cluster::start(PREFIX).await.unwrap();
    let org = c.org("hostile-rest").await.unwrap();
    let (reader, _) = c.key(&org, "read").await.unwrap();
    let embedded = tempfile::tempdir().unwrap();
    let worker = c
        .worker(
            "hostile-rest",
            &[(
                "MEMTRACE_WORKER_EMBEDDED_DIR",
                embedded.path().to_str().unwrap(),
            )],
        )
        .await
        .unwrap();
    let api = Api::new(&worker, Some(&reader));
    // 300,000 distinct tags (≈ 3.5 MB): took over 60 s with the quadratic
    // de-duplication; now refused at the 17th distinct tag
    let distinct: Vec<String> = (0..300_000).map(|i| format!("t{i}")).collect();
    let (s, b) = tokio::time::timeout(
        ANSWER_WITHIN,
        api.post("/api/v1/search", json!({ "tags": distinct })),
    )
    .await
    .expect("answered");
    assert_eq!(s, 400, "{b}");
    assert_eq!(error_of(&b), "too many tags: at most 16");
    // the same tag 300,000 times: refused at the 257th value
    let same = vec!["door"; 300_000];
    let (s, b) = tokio::time::timeout(
        ANSWER_WITHIN,
        api.post(
            "/api/v1/search",
            json!({ "tags": same, "event_types": ["general"] }),
        ),
    )
    .await
    .expect("answered");
    assert_eq!(s, 400, "{b}");
    assert!(error_of(&b).contains("tags"), "{b}");
    assert!(error_of(&b).contains("at most 256 values"), "{b}");
    // a list's tags as one comma-separated query value
    let csv = vec!["door"; 2_000].join(",");
    let (s, b) = tokio::time::timeout(
        ANSWER_WITHIN,
        api.get(&format!("/api/v1/memories?tags={csv}")),
    )
    .await
    .expect("answered");
    assert_eq!(s, 400, "{b}");
    assert!(error_of(&b).contains("at most 256 values"), "{b}");
    // the worker still answers ordinary reads
    let (s, b) = api.post("/api/v1/search", json!({"tags": ["door"]})).await;
    assert_eq!(s, 200, "{b}");
}

/// One tenant asking for a page of big memories cannot push the worker
/// past its bound: 1,000 memories of 250 KB (250 MB if read at once) asked
/// for with `limit=1000` are refused with 413 naming what to do, while the
/// worker's peak memory stays bounded; a page that fits is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_huge_memories_is_refused_within_the_reply_bound() {
    use memtrace_data_plane::arcdb::{
        ArcClient, ArcTarget, Compression, MemoryBatch, RetryPolicy, compress,
    };
    use memtrace_data_plane::store::MemoryRow;
    const DB: &str = "hugereads";
    const TOKEN: &str = "arc-huge-reads-token-0123456789";
    let c = Cluster::start(PREFIX).await.unwrap();
    // instant answers: behaviour, not time
    let arc = memtrace_tests::cluster::arc_with_token(TOKEN, DB)
        .await
        .unwrap();
    let org = c.org("hostile-huge").await.unwrap();
    c.add_arc(&org, &arc.url(), DB, Some(TOKEN)).await.unwrap();
    let (reader, _) = c.key(&org, "read").await.unwrap();
    // the stand-in (this process, a debug build) may take longer than the
    // default 30 s to render a 250 MB reply on a loaded machine
    let revision = c
        .set_config("arc.query_timeout_ms", "150000")
        .await
        .unwrap();
    let worker = c
        .worker("hostile-huge", &[("MEMTRACE_ARC_QUERY_TIMEOUT", "150")])
        .await
        .unwrap();
    c.wait_applied(revision).await.unwrap();

    // 1,000 memories of 250 KB written straight to the tenant's Arc
    let client = ArcClient::new(Duration::from_secs(5), Duration::from_secs(60)).unwrap();
    let target = ArcTarget {
        url: &arc.url(),
        database: DB,
        measurement: "events",
        api_key: Some(TOKEN),
    };
    let now = memtrace_data_plane::query::UnixMicros::now().0;
    for chunk in 0..20i64 {
        let mut batch = MemoryBatch::with_capacity(50);
        for i in 0..50i64 {
            let n = chunk * 50 + i;
            batch.push(&MemoryRow {
                time: now - 1_000_000 + n,
                id: format!("mem_huge_{n:05}"),
                org_id: org.as_str().into(),
                agent_id: "big".into(),
                memory_type: "episodic".into(),
                event_type: "general".into(),
                content: format!("{n:05}{}", "x".repeat(250_000)),
                metadata_json: "{}".into(),
                ..MemoryRow::default()
            });
        }
        let body = compress(&batch.encode("events"), Compression::Zstd).unwrap();
        client
            .write_with_retry(
                &target,
                body.into(),
                Compression::Zstd,
                &RetryPolicy::default(),
            )
            .await
            .unwrap();
    }
    assert_eq!(arc.row_count(DB, "events"), 1000);

    let pid = worker.pid().unwrap();
    let api = Api::new(&worker, Some(&reader));
    let peak_before = peak_rss_kib(pid).unwrap();
    for (what, path, body) in [
        ("list", "/api/v1/memories?agent_id=big&limit=1000", None),
        (
            "search",
            "/api/v1/search",
            Some(json!({"agent_id": "big", "limit": 1000})),
        ),
    ] {
        // the stand-in (this process, a debug build) takes its time to
        // render a 250 MB reply; the worker stops reading it at its bound
        let (s, b) = tokio::time::timeout(Duration::from_secs(180), async {
            match &body {
                Some(body) => api.post(path, body.clone()).await,
                None => api.get(path).await,
            }
        })
        .await
        .expect("answered");
        assert_eq!(s, 413, "{what}: {b}");
        assert!(
            error_of(&b).contains("ask for fewer memories"),
            "{what}: {b}"
        );
    }
    let grown_mib = peak_rss_kib(pid).unwrap().saturating_sub(peak_before) / 1024;
    assert!(
        grown_mib < 96,
        "the worker's peak RSS grew by {grown_mib} MiB refusing 250 MB pages"
    );
    // a page within the bound is served
    let (s, b) = api.get("/api/v1/memories?agent_id=big&limit=40").await;
    assert_eq!(s, 200);
    assert_eq!(b["count"], 40);
    assert_eq!(b["has_more"], true);
}
