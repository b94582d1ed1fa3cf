//! Both planes count and time every request on `/metrics`
//! (`memtrace_requests_total{protocol, route, code}`,
//! `memtrace_request_duration_seconds{protocol, route}`): REST by the route
//! template it matched and its status, gRPC by method and `grpc-status`
//! (refusals of the key-first guard included), and paths nothing serves as
//! `route="unmatched"` — never an id or a path a client made up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_proto::v1 as pb;
use memtrace_tests::api::Api;
use memtrace_tests::cluster::Cluster;
use memtrace_tests::grpc::{channel, get_text, with_key};
use memtrace_tests::metrics::sample;
use pb::memory_service_client::MemoryServiceClient;
use serde_json::json;

const PREFIX: &str = "/memtrace-request-metrics/v1/";

/// The value of the `memtrace_requests_total` samples whose labels include
/// every one of `labels`, 0 when there is none.
fn requests(text: &str, labels: &[&str]) -> f64 {
    sample(text, "memtrace_requests_total", labels)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_planes_count_requests_by_route_and_code() {
    let c = Cluster::start(PREFIX).await.unwrap();
    let org = c.org("metered").await.unwrap();
    let (key, _) = c.key(&org, "read,write").await.unwrap();
    let embedded = tempfile::tempdir().unwrap();
    let worker = c
        .worker(
            "metered",
            &[(
                "MEMTRACE_WORKER_EMBEDDED_DIR",
                embedded.path().to_str().unwrap(),
            )],
        )
        .await
        .unwrap();
    let url = worker.url();

    // REST: a write, a read by id (templated), an unknown path, no key
    let api = Api::new(&worker, Some(&key));
    let (s, b) = api
        .post(
            "/api/v1/memories",
            json!({"agent_id": "metered", "content": "counted"}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, _) = api.get("/api/v1/memories/mem_does_not_exist").await;
    assert_eq!(s, 404);
    let (s, _) = api.get("/api/v1/no/such/route/mem_secret_id").await;
    assert_eq!(s, 404);
    let (s, _) = Api::new(&worker, None).get("/api/v1/memories").await;
    assert_eq!(s, 401);

    // gRPC: a read with the key, one without, an unknown method
    let mut grpc = MemoryServiceClient::new(channel(&url).await);
    let list = || pb::ListMemoriesRequest {
        agent_id: "metered".into(),
        ..pb::ListMemoriesRequest::default()
    };
    grpc.list_memories(with_key(Some(&key), list()))
        .await
        .unwrap();
    let refused = grpc.list_memories(with_key(None, list())).await;
    assert_eq!(refused.unwrap_err().code(), tonic::Code::Unauthenticated);
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let unknown = h2
        .post(format!("{url}/memtrace.v1.MemoryService/MadeUpMethod"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("x-api-key", &key)
        .body(vec![0u8, 0, 0, 0, 0])
        .send()
        .await
        .unwrap();
    assert_eq!(
        unknown.headers().get("grpc-status").unwrap(),
        "12",
        "{unknown:?}"
    );

    // made-up paths without a key: refused by the key-first guard, still
    // counted as unmatched (a client cannot mint label values)
    for n in 0..3 {
        let refused = h2
            .post(format!("{url}/memtrace.v1.MemoryService/Minted{n}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(vec![0u8, 0, 0, 0, 0])
            .send()
            .await
            .unwrap();
        assert_eq!(refused.headers().get("grpc-status").unwrap(), "16");
    }
    // and a service nothing serves (answered by the HTTP fallback)
    h2.post(format!("{url}/made.up.Service/Method"))
        .header("content-type", "application/grpc")
        .body(vec![0u8, 0, 0, 0, 0])
        .send()
        .await
        .unwrap();

    let text = get_text(&url, "/metrics").await;
    let http = r#"protocol="http""#;
    let grpc_p = r#"protocol="grpc""#;
    for (labels, what) in [
        (
            vec![http, r#"route="/api/v1/memories""#, r#"code="201""#],
            "REST write",
        ),
        (
            vec![http, r#"route="/api/v1/memories/{id}""#, r#"code="404""#],
            "REST read by id",
        ),
        (
            vec![http, r#"route="/api/v1/memories""#, r#"code="401""#],
            "REST without a key",
        ),
        (
            vec![http, r#"route="unmatched""#, r#"code="404""#],
            "REST unknown path",
        ),
        (
            vec![
                grpc_p,
                r#"route="/memtrace.v1.MemoryService/ListMemories""#,
                r#"code="OK""#,
            ],
            "gRPC read",
        ),
        (
            vec![
                grpc_p,
                r#"route="/memtrace.v1.MemoryService/ListMemories""#,
                r#"code="UNAUTHENTICATED""#,
            ],
            "gRPC without a key",
        ),
        (
            vec![grpc_p, r#"route="unmatched""#, r#"code="UNIMPLEMENTED""#],
            "gRPC unknown method",
        ),
        (
            vec![grpc_p, r#"route="unmatched""#, r#"code="UNAUTHENTICATED""#],
            "gRPC made-up paths without a key",
        ),
    ] {
        assert!(
            requests(&text, &labels) >= 1.0,
            "{what}: {labels:?}\n{text}"
        );
    }
    for minted in ["mem_secret_id", "MadeUpMethod", "Minted", "made.up"] {
        assert!(!text.contains(minted), "{minted} in\n{text}");
    }
    assert!(!text.contains("mem_does_not_exist"));
    assert!(
        text.contains(
            r#"memtrace_request_duration_seconds_count{protocol="http",route="/api/v1/memories"}"#
        ),
        "{text}"
    );

    // the control plane: the admin calls this test made through memtracectl
    let cp_metrics = get_text(&c.control_plane.url(), "/metrics").await;
    let created = requests(
        &cp_metrics,
        &[
            grpc_p,
            r#"route="/memtrace.admin.v1.OrgService/CreateOrg""#,
            r#"code="OK""#,
        ],
    );
    assert!(created >= 1.0, "{cp_metrics}");
}
