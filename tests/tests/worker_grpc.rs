//! The worker's `memtrace.v1` gRPC API against the real `memtrace-worker`
//! binary, a real etcd and control plane, and an Arc stand-in: a memory
//! written through gRPC is readable through REST and the other way round;
//! the bidirectional streaming write acknowledges each batch with per-item
//! outcomes, and only after Arc answered; auth, scopes, no-Arc and
//! revocation without restart; agents and sessions; and a SIGTERM that
//! flushes queued writes and acknowledges them before the worker exits.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_proto::v1 as pb;
use memtrace_tests::arc::{ArcStandIn, Fault, Target};
use memtrace_tests::cluster::{Cluster, arc_with_token, eventually};
use memtrace_tests::grpc::{channel, with_key};
use pb::agent_service_client::AgentServiceClient;
use pb::item_result::Outcome;
use pb::memory_service_client::MemoryServiceClient;
use pb::session_service_client::SessionServiceClient;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request};

const ARC_TOKEN: &str = "arc-grpc-test-token-0123456789";
const DB: &str = "grpctest";

fn req<T>(key: &str, message: T) -> Request<T> {
    with_key(Some(key), message)
}

fn input(agent: &str, content: &str) -> pb::MemoryInput {
    pb::MemoryInput {
        agent_id: agent.into(),
        content: content.into(),
        ..pb::MemoryInput::default()
    }
}

/// A cluster with one org bound to a token-protected Arc stand-in; returns
/// the org id and a read-write key.
async fn bound_org(c: &Cluster, arc: &ArcStandIn, name: &str) -> (String, String) {
    let org = c.org(name).await.unwrap();
    c.add_arc(&org, &arc.url(), DB, Some(ARC_TOKEN))
        .await
        .unwrap();
    let (key, _) = c.key(&org, "read,write").await.unwrap();
    (org, key)
}

/// Answers instantly (see `arc_with_token`): behaviour, not time.
async fn arc() -> ArcStandIn {
    arc_with_token(ARC_TOKEN, DB).await.unwrap()
}

async fn rest(
    base: &str,
    key: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let http = memtrace_tests::http_client();
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut r = http
        .request(method, format!("{base}{path}"))
        .header("x-api-key", key);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_and_rest_read_each_others_writes_and_streams_ack_after_arc() {
    let c = Cluster::start("/memtrace-grpc/v1/").await.unwrap();
    let arc = arc().await;
    let (_org, key) = bound_org(&c, &arc, "grpc-arc").await;
    let worker = c.worker("grpc-a", &[]).await.unwrap();
    let ch = channel(&worker.url()).await;
    let mut memories = MemoryServiceClient::new(ch.clone());

    // gRPC write → REST read
    let created = memories
        .create_memory(req(
            &key,
            pb::CreateMemoryRequest {
                memory: Some(pb::MemoryInput {
                    tags: vec!["grpc".into()],
                    metadata_json: r#"{"via":"grpc"}"#.into(),
                    importance: 0.75,
                    ..input("agent_grpc", "written over grpc")
                }),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .memory
        .unwrap();
    assert!(created.id.starts_with("mem_"), "{created:?}");
    assert!(created.time_unix_micros > 1_700_000_000_000_000);
    let (s, m) = rest(
        &worker.url(),
        &key,
        "GET",
        &format!("/api/v1/memories/{}", created.id),
        None,
    )
    .await;
    assert_eq!(s, 200, "{m}");
    assert_eq!(m["content"], "written over grpc");
    assert_eq!(m["tags"], json!(["grpc"]));
    assert_eq!(m["metadata"], json!({"via": "grpc"}));
    assert_eq!(m["importance"], 0.75);

    // REST write → gRPC read (get and list)
    let (s, m) = rest(
        &worker.url(),
        &key,
        "POST",
        "/api/v1/memories",
        Some(json!({"agent_id": "agent_rest", "content": "written over rest"})),
    )
    .await;
    assert_eq!(s, 201, "{m}");
    let id = m["id"].as_str().unwrap().to_owned();
    let got = memories
        .get_memory(req(&key, pb::GetMemoryRequest { id: id.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.content, "written over rest");
    assert_eq!(got.memory_type, "episodic");
    let list = memories
        .list_memories(req(
            &key,
            pb::ListMemoriesRequest {
                agent_id: "agent_rest".into(),
                ..pb::ListMemoriesRequest::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.count, 1);
    assert_eq!(list.memories[0].id, id);
    let found = memories
        .search_memories(req(
            &key,
            pb::SearchMemoriesRequest {
                content_contains: "OVER GRPC".into(),
                ..pb::SearchMemoriesRequest::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.count, 1, "{found:?}");
    assert_eq!(found.results[0].id, created.id);
    let dup = memories
        .create_memory(req(
            &key,
            pb::CreateMemoryRequest {
                memory: Some(input("agent_rest", "written over rest")),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Code::AlreadyExists, "{dup:?}");

    // streaming: per-item outcomes, one ack per batch
    let (tx, rx) = mpsc::channel(8);
    let mut acks = memories
        .stream_memories(req(&key, ReceiverStream::new(rx)))
        .await
        .unwrap()
        .into_inner();
    for seq in 1..=3u64 {
        let mut batch: Vec<pb::MemoryInput> = (0..4)
            .map(|i| input("agent_stream", &format!("streamed {seq}-{i}")))
            .collect();
        batch.push(pb::MemoryInput {
            memory_type: "bogus".into(),
            ..input("agent_stream", "invalid type")
        });
        batch.push(input("agent_stream", &format!("streamed {seq}-0")));
        tx.send(pb::WriteBatch {
            sequence: seq,
            memories: batch,
        })
        .await
        .unwrap();
    }
    let mut seen = Vec::new();
    for _ in 0..3 {
        let ack = tokio::time::timeout(Duration::from_secs(10), acks.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(ack.error.is_none(), "{ack:?}");
        let outcomes: Vec<i32> = ack.results.iter().map(|r| r.outcome).collect();
        let c = Outcome::Created as i32;
        assert_eq!(
            outcomes,
            vec![
                c,
                c,
                c,
                c,
                Outcome::Invalid as i32,
                Outcome::Duplicate as i32
            ],
            "{ack:?}"
        );
        assert!(ack.results[4].error.contains("memory_type"), "{ack:?}");
        assert!(ack.results[..4].iter().all(|r| r.id.starts_with("mem_")));
        seen.push(ack.sequence);
    }
    seen.sort_unstable();
    assert_eq!(seen, [1, 2, 3]);
    let streamed = rest(
        &worker.url(),
        &key,
        "GET",
        "/api/v1/memories?agent_id=agent_stream",
        None,
    )
    .await;
    assert_eq!(streamed.1["count"], 12, "{}", streamed.1);

    // an ack waits for Arc: stall Arc's writes, no ack until released
    arc.faults().inject(Fault::stall().on(Target::Writes));
    tx.send(pb::WriteBatch {
        sequence: 4,
        memories: vec![input("agent_stream", "held by a stalled arc")],
    })
    .await
    .unwrap();
    assert!(arc.faults().wait_stalled(1, Duration::from_secs(10)).await);
    let early = tokio::time::timeout(Duration::from_millis(500), acks.message()).await;
    assert!(early.is_err(), "acked before arc answered: {early:?}");
    arc.faults().clear();
    let ack = tokio::time::timeout(Duration::from_secs(10), acks.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(ack.sequence, 4);
    assert_eq!(ack.results[0].outcome, Outcome::Created as i32, "{ack:?}");
    drop(tx);
    assert!(
        tokio::time::timeout(Duration::from_secs(10), acks.message())
            .await
            .unwrap()
            .unwrap()
            .is_none(),
        "the stream ends after the client half-closes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_auth_scopes_no_arc_revocation_agents_and_sessions() {
    let c = Cluster::start("/memtrace-grpc-auth/v1/").await.unwrap();
    let arc = arc().await;
    let (org, key) = bound_org(&c, &arc, "grpc-auth").await;
    let (read_only, _) = c.key(&org, "read").await.unwrap();
    let unbound = c.org("grpc-unbound").await.unwrap();
    let (unbound_key, _) = c.key(&unbound, "read,write").await.unwrap();
    // bound to an address nothing listens on: reported unreachable, not fatal
    let dark = c.org("grpc-dark-arc").await.unwrap();
    c.add_arc(&dark, "http://127.0.0.1:9", DB, None)
        .await
        .unwrap();
    let worker = c
        .worker("grpc-b", &[("MEMTRACE_ARC_CONNECT_TIMEOUT", "1")])
        .await
        .unwrap();
    let ready = eventually(
        "arc reachability reported",
        Duration::from_secs(15),
        async || {
            let r = memtrace_tests::http_client()
                .get(format!("{}/ready", worker.url()))
                .send()
                .await
                .ok()?;
            let status = r.status().as_u16();
            let body: Value = r.json().await.ok()?;
            let probed =
                body["arc"]["reachable"].as_u64()? + body["arc"]["unreachable"].as_u64()?;
            (probed == 2).then_some((status, body))
        },
    )
    .await
    .unwrap();
    assert_eq!(
        ready.0, 200,
        "an unreachable arc never makes the worker unready"
    );
    // counts only: the probes need no key, so they never name an org
    assert_eq!(
        ready.1["arc"],
        json!({"reachable": 1, "unreachable": 1}),
        "the unbound org counts in neither: {}",
        ready.1
    );
    let health = memtrace_tests::grpc::get_text(&worker.url(), "/health").await;
    let metrics = memtrace_tests::grpc::get_text(&worker.url(), "/metrics").await;
    let health: Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["arc"], ready.1["arc"], "{health}");
    assert!(
        metrics.contains("memtrace_arc_reachable_orgs 1")
            && metrics.contains("memtrace_arc_unreachable_orgs 1"),
        "{metrics}"
    );
    for body in [ready.1.to_string(), health.to_string(), metrics] {
        for id in [&org, &dark, &unbound] {
            assert!(!body.contains(id.as_str()), "{id} named in {body}");
        }
    }
    let ch = channel(&worker.url()).await;
    let mut memories = MemoryServiceClient::new(ch.clone());
    let write = |k: &str| {
        req(
            k,
            pb::CreateMemoryRequest {
                memory: Some(input("agent_x", "scoped")),
            },
        )
    };

    let anonymous = memories
        .create_memory(Request::new(pb::CreateMemoryRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    assert_eq!(anonymous.message(), "missing API key");

    // empty items cost 2 bytes each on the wire and ~250 decoded: a batch of
    // them is refused before it is decoded, and the worker serves on
    let flood = vec![pb::MemoryInput::default(); memtrace_proto::codec::MAX_DECODED_MEMORIES + 1];
    let refused = memories
        .create_memories(req(&key, pb::CreateMemoriesRequest { memories: flood }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("too many memories"),
        "{refused:?}"
    );
    let served = memories
        .create_memory(req(
            &key,
            pb::CreateMemoryRequest {
                memory: Some(input("agent_x", "served after a refused flood")),
            },
        ))
        .await
        .unwrap();
    let content = served.into_inner().memory.unwrap().content;
    assert_eq!(content, "served after a refused flood");
    let denied = memories.create_memory(write(&read_only)).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    let no_arc = memories
        .create_memory(write(&unbound_key))
        .await
        .unwrap_err();
    assert_eq!(no_arc.code(), Code::FailedPrecondition, "{no_arc:?}");
    assert!(no_arc.message().contains("arc instance"), "{no_arc:?}");
    let invalid = memories
        .create_memory(req(
            &key,
            pb::CreateMemoryRequest {
                memory: Some(input("1starts-with-digit", "x")),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);
    assert!(invalid.message().contains("agent_id"), "{invalid:?}");
    // a huge offset is refused before Arc sees it (it came back as an Arc
    // error); the deepest page allowed is an ordinary read from Arc
    let page = |offset: i64| {
        req(
            &key,
            pb::ListMemoriesRequest {
                offset,
                ..pb::ListMemoriesRequest::default()
            },
        )
    };
    for offset in [100_001, i64::MAX] {
        let deep = memories.list_memories(page(offset)).await.unwrap_err();
        assert_eq!(deep.code(), Code::InvalidArgument, "{deep:?}");
        assert_eq!(
            deep.message(),
            "invalid offset: must be between 0 and 100000"
        );
    }
    let deepest = memories
        .list_memories(page(100_000))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((deepest.count, deepest.has_more), (0, false), "{deepest:?}");

    // agents and sessions
    let mut agents = AgentServiceClient::new(ch.clone());
    let agent = agents
        .register_agent(req(
            &key,
            pb::RegisterAgentRequest {
                name: "planner".into(),
                description: "plans".into(),
                config_json: r#"{"model":"m1"}"#.into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(agent.id.starts_with("agent_"), "{agent:?}");
    let by_name = agents
        .get_agent(req(
            &key,
            pb::AgentRef {
                id: "planner".into(),
                cascade: false,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_name.id, agent.id);
    assert_eq!(by_name.config_json, r#"{"model":"m1"}"#);
    let taken = agents
        .register_agent(req(
            &key,
            pb::RegisterAgentRequest {
                name: "planner".into(),
                ..pb::RegisterAgentRequest::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(taken.code(), Code::AlreadyExists);
    let mut sessions = SessionServiceClient::new(ch.clone());
    let session = sessions
        .create_session(req(
            &key,
            pb::CreateSessionRequest {
                agent_id: "planner".into(),
                metadata_json: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(session.agent_id, agent.id);
    assert_eq!(session.status, "active");
    memories
        .create_memory(req(
            &key,
            pb::CreateMemoryRequest {
                memory: Some(pb::MemoryInput {
                    session_id: session.id.clone(),
                    memory_type: "decision".into(),
                    event_type: "decision".into(),
                    ..input(&agent.id, "use the blue deploy")
                }),
            },
        ))
        .await
        .unwrap();
    let context = sessions
        .get_session_context(req(
            &key,
            pb::SessionContextRequest {
                id: session.id.clone(),
                ..pb::SessionContextRequest::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        context.context.contains("## Session Context"),
        "{context:?}"
    );
    assert!(
        context.context.contains("use the blue deploy"),
        "{context:?}"
    );
    assert_eq!(context.memory_count, 1);
    let closed = sessions
        .update_session(req(
            &key,
            pb::UpdateSessionRequest {
                id: session.id.clone(),
                status: "closed".into(),
                metadata_json: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(closed.status, "closed");
    assert!(closed.closed_at_unix_micros > 0);
    let stats = agents
        .get_agent_stats(req(
            &key,
            pb::AgentRef {
                id: agent.id.clone(),
                cascade: false,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.memory_count, 1);
    assert_eq!(stats.memory_types.get("decision"), Some(&1));
    let missing = sessions
        .get_session(req(
            &key,
            pb::SessionRef {
                id: "sess_unknown".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    // a revoked key is refused by the running worker
    let (doomed, doomed_id) = c.key(&org, "read,write").await.unwrap();
    memories.create_memory(write(&doomed)).await.unwrap();
    c.ctl.json(&["key", "revoke", &doomed_id]).await.unwrap();
    eventually(
        "revocation applied",
        Duration::from_secs(10),
        async || match memories.create_memory(write(&doomed)).await {
            Err(e) if e.code() == Code::Unauthenticated => Ok(()),
            other => Err(format!("the revoked key still got {other:?}")),
        },
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_queued_writes_and_acks_them_before_exit() {
    let c = Cluster::start("/memtrace-grpc-term/v1/").await.unwrap();
    let arc = arc().await;
    let (_org, key) = bound_org(&c, &arc, "grpc-term").await;
    let worker = c.worker("grpc-term", &[]).await.unwrap();
    // Arc holds the write: it is queued and in flight when SIGTERM arrives
    arc.faults().inject(Fault::stall().on(Target::Writes));
    let base = worker.url();
    let pending = tokio::spawn(async move {
        let answer = rest(
            &base,
            &key,
            "POST",
            "/api/v1/memories",
            Some(json!({"agent_id": "agent_term", "content": "queued at shutdown"})),
        )
        .await;
        (answer, std::time::Instant::now())
    });
    assert!(arc.faults().wait_stalled(1, Duration::from_secs(10)).await);
    let faults = arc.faults();
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(800)).await;
        let released_at = std::time::Instant::now();
        faults.clear();
        released_at
    });
    let status = tokio::time::timeout(Duration::from_secs(20), worker.stop())
        .await
        .expect("worker exits within its grace")
        .unwrap();
    assert!(status.success(), "{status:?}");
    let ((s, body), answered_at) = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s, 201, "acknowledged during shutdown: {body}");
    assert_eq!(
        arc.row_count(DB, "events"),
        1,
        "stored in arc before the ack"
    );
    let released_at = release.await.unwrap();
    assert!(
        answered_at >= released_at,
        "the 201 came {:?} before arc was released",
        released_at - answered_at
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_429_with_retry_after_and_loses_nothing() {
    let c = Cluster::start("/memtrace-grpc-full/v1/").await.unwrap();
    let arc = arc().await;
    let (_org, key) = bound_org(&c, &arc, "grpc-full").await;
    c.ctl
        .json(&["config", "set", "limits.max_queued_events", "2"])
        .await
        .unwrap();
    let worker = c.worker("grpc-full", &[]).await.unwrap();
    arc.faults().inject(Fault::stall().on(Target::Writes));
    let mut held = Vec::new();
    for i in 0..2 {
        let (base, key) = (worker.url(), key.clone());
        held.push(tokio::spawn(async move {
            rest(
                &base,
                &key,
                "POST",
                "/api/v1/memories",
                Some(json!({"agent_id": "agent_full", "content": format!("queued {i}")})),
            )
            .await
        }));
        // one at a time, so each is admitted before the next arrives
        eventually("write queued", Duration::from_secs(10), async || {
            let metrics = memtrace_tests::http_client()
                .get(format!("{}/metrics", worker.url()))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            metrics
                .lines()
                .any(|l| l == format!("memtrace_ingest_queued_rows {}", i + 1))
                .then_some(())
        })
        .await
        .unwrap();
    }
    // the queue holds 2: the third write is refused at once, with a hint when to retry
    let http = memtrace_tests::http_client();
    let refused = http
        .post(format!("{}/api/v1/memories", worker.url()))
        .header("x-api-key", &key)
        .json(&json!({"agent_id": "agent_full", "content": "one too many"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1, "{retry_after}");
    let body: Value = refused.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("queue"), "{body}");
    // released: the two admitted writes are stored and acknowledged, the
    // refused one was never stored
    arc.faults().clear();
    for h in held {
        let (s, b) = tokio::time::timeout(Duration::from_secs(10), h)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(s, 201, "{b}");
    }
    assert_eq!(arc.row_count(DB, "events"), 2);
}
