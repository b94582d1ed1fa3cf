//! Trace export over OTLP/gRPC to a receiver in the test: a worker started
//! with the published `telemetry.otlp_endpoint` exports a span per request
//! whose parent is the client's W3C `traceparent`, with the org (never the
//! key) as an attribute; the group-commit batch is a child of the request
//! that wrote into it, the Arc write a child of the batch, an Arc read a
//! child of its request, and Arc receives the `traceparent` of its call.
//! gRPC calls get the same request span, and a control plane started with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` exports a span per admin call. The
//! stand-in answers instantly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_proto::v1 as pb;
use memtrace_tests::cli::Ctl;
use memtrace_tests::cluster::{Cluster, arc_with_token};
use memtrace_tests::control_plane::{ControlPlane, ControlPlaneSpec};
use memtrace_tests::grpc::channel;
use memtrace_tests::otlp::{OtlpReceiver, ReceivedSpan};
use pb::memory_service_client::MemoryServiceClient;
use serde_json::json;
use std::time::Duration;

const PREFIX: &str = "/memtrace-traces/v1/";
const ARC_TOKEN: &str = "arc-traces-token-0123456789abcdef";
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const WAIT: Duration = Duration::from_secs(20);

fn traceparent(parent: &str) -> String {
    format!("00-{TRACE}-{parent}-01")
}

fn named<'a>(spans: &'a [ReceivedSpan], name: &str) -> impl Iterator<Item = &'a ReceivedSpan> {
    let name = name.to_owned();
    spans
        .iter()
        .filter(move |s| s.name == name && s.trace_id == TRACE)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_batches_and_arc_calls_are_exported_with_their_parents() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let c = Cluster::start(PREFIX).await.unwrap();
    let arc = arc_with_token(ARC_TOKEN, "traces").await.unwrap();
    let org = c.org("traced").await.unwrap();
    c.add_arc(&org, &arc.url(), "traces", Some(ARC_TOKEN))
        .await
        .unwrap();
    let (key, _) = c.key(&org, "read,write").await.unwrap();
    c.set_config("telemetry.otlp_endpoint", &receiver.endpoint())
        .await
        .unwrap();
    let worker = c
        .worker("traced", &[("OTEL_BSP_SCHEDULE_DELAY", "100")])
        .await
        .unwrap();
    c.wait_in_sync(&worker).await.unwrap();
    let http = worker.client();
    let url = worker.url();

    // a write and a read, each in the client's trace
    let write_parent = "00f067aa0ba902b7";
    let resp = http
        .post(format!("{url}/api/v1/memories"))
        .header("x-api-key", &key)
        .header("traceparent", traceparent(write_parent))
        .json(&json!({"agent_id": "tracer", "content": "followed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let read_parent = "00f067aa0ba902b8";
    let resp = http
        .get(format!("{url}/api/v1/memories?agent_id=tracer"))
        .header("x-api-key", &key)
        .header("traceparent", traceparent(read_parent))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let sent = arc.last_request().expect("arc saw the read");
    let arc_traceparent = sent
        .headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    // and a gRPC call in the same trace
    let grpc_parent = "00f067aa0ba902b9";
    let mut grpc = MemoryServiceClient::new(channel(&url).await);
    let mut request = tonic::Request::new(pb::ListMemoriesRequest {
        agent_id: "tracer".into(),
        ..pb::ListMemoriesRequest::default()
    });
    request
        .metadata_mut()
        .insert("x-api-key", key.parse().unwrap());
    request
        .metadata_mut()
        .insert("traceparent", traceparent(grpc_parent).parse().unwrap());
    grpc.list_memories(request).await.unwrap();

    // the write: request ← batch ← arc write
    let write = receiver
        .wait_for("POST request", WAIT, |spans| {
            named(spans, "POST /api/v1/memories")
                .find(|s| s.parent_span_id == write_parent)
                .cloned()
        })
        .await
        .unwrap();
    assert_eq!(write.service, "memtrace-worker");
    assert_eq!(write.attribute("memtrace.org"), Some(org.as_str()));
    assert_eq!(write.attribute("http.route"), Some("/api/v1/memories"));
    assert_eq!(write.attribute("http.response.status_code"), Some("201"));
    let batch = receiver
        .wait_for("ingest.batch under the write", WAIT, |spans| {
            named(spans, "ingest.batch")
                .find(|s| s.parent_span_id == write.span_id)
                .cloned()
        })
        .await
        .unwrap();
    assert_eq!(batch.attribute("memtrace.rows"), Some("1"));
    receiver
        .wait_for("arc.write under the batch", WAIT, |spans| {
            named(spans, "arc.write")
                .find(|s| s.parent_span_id == batch.span_id)
                .cloned()
        })
        .await
        .unwrap();

    // the read: request ← arc query, whose traceparent Arc received
    let read = receiver
        .wait_for("GET request", WAIT, |spans| {
            named(spans, "GET /api/v1/memories")
                .find(|s| s.parent_span_id == read_parent)
                .cloned()
        })
        .await
        .unwrap();
    let query = receiver
        .wait_for("arc.query under the read", WAIT, |spans| {
            named(spans, "arc.query")
                .find(|s| s.parent_span_id == read.span_id)
                .cloned()
        })
        .await
        .unwrap();
    assert_eq!(
        arc_traceparent,
        format!("00-{TRACE}-{}-01", query.span_id),
        "Arc got the query span's context"
    );

    // gRPC
    let call = receiver
        .wait_for("gRPC request", WAIT, |spans| {
            named(spans, "/memtrace.v1.MemoryService/ListMemories")
                .find(|s| s.parent_span_id == grpc_parent)
                .cloned()
        })
        .await
        .unwrap();
    assert_eq!(call.attribute("rpc.grpc.status_code"), Some("OK"));
    assert_eq!(call.attribute("memtrace.org"), Some(org.as_str()));

    // no span carries the key or the Arc token
    for span in receiver.spans() {
        for (k, v) in &span.attributes {
            assert!(
                !v.contains(&key) && !v.contains(ARC_TOKEN),
                "{k}={v} in {span:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_exports_a_span_per_admin_call() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut spec = ControlPlaneSpec::default();
    spec.extra_env
        .insert("OTEL_EXPORTER_OTLP_ENDPOINT".into(), receiver.endpoint());
    spec.extra_env
        .insert("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into());
    let cp = ControlPlane::start(dir.path(), spec).await.unwrap();
    let ctl = Ctl {
        server: cp.url(),
        token: cp.admin_token().unwrap(),
        ca_file: None,
    };
    ctl.json(&["org", "create", "traced-admin"]).await.unwrap();
    let call = receiver
        .wait_for("an admin call", WAIT, |spans| {
            spans
                .iter()
                .find(|s| s.name == "/memtrace.admin.v1.OrgService/CreateOrg")
                .cloned()
        })
        .await
        .unwrap();
    assert_eq!(call.service, "memtrace-control-plane");
    assert_eq!(call.attribute("rpc.grpc.status_code"), Some("OK"));
    let admin_token = cp.admin_token().unwrap();
    for span in receiver.spans() {
        for (k, v) in &span.attributes {
            assert!(!v.contains(&admin_token), "{k}={v} in {span:?}");
        }
    }
    cp.stop().await.unwrap();
}
