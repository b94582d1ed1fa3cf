//! Deleting memories through the data API: by id, by ids and by filter
//! (with a dry run), against two `memtrace-worker` processes sharing one
//! org bound to the Arc stand-in (instant answers: behaviour, not time).
//! A delete answered 202 is hidden from every read of every worker when the
//! answer arrives — whatever the store still holds — because the erasure is
//! on the state bus and every worker applied it before the answer. A memory
//! written after a delete by filter is not covered. Bad deletes are 400s
//! naming the field; a read-only key gets 403; an org whose erasures in
//! progress fill their SQL budget gets 429 with Retry-After.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_tests::api::{Api, error_of};
use memtrace_tests::cluster::{Cluster, arc_with_token};
use serde_json::{Value, json};
use std::collections::BTreeSet;

const PREFIX: &str = "/memtrace-delete/v1/";
const ARC_TOKEN: &str = "arc-delete-test-token-0123456789";
const DB: &str = "deletetest";

/// A cluster with one org bound to a fresh Arc stand-in (instant answers)
/// and a read-write key of it.
struct Bound {
    c: Cluster,
    arc: memtrace_tests::arc::ArcStandIn,
    org: String,
    key: String,
}

async fn bound(prefix: &str, name: &str, env: &[(&str, &str)]) -> Bound {
    let c = Cluster::start_with_env(prefix, env).await.unwrap();
    let arc = arc_with_token(ARC_TOKEN, DB).await.unwrap();
    let org = c.org(name).await.unwrap();
    c.add_arc(&org, &arc.url(), DB, Some(ARC_TOKEN))
        .await
        .unwrap();
    let (key, _) = c.key(&org, "read,write").await.unwrap();
    Bound { c, arc, org, key }
}

fn ids(list: &Value, field: &str) -> BTreeSet<String> {
    list[field]
        .as_array()
        .unwrap_or_else(|| panic!("{field} in {list}"))
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Every read of `api` shows exactly `want` of the memories in `session`.
async fn reads_show(api: &Api, who: &str, agent: &str, session: &str, want: &BTreeSet<String>) {
    let (s, list) = api
        .get(&format!("/api/v1/memories?session_id={session}&limit=100"))
        .await;
    assert_eq!(s, 200, "{who} list: {list}");
    assert_eq!(&ids(&list, "memories"), want, "{who} list");
    let (s, asc) = api
        .get(&format!(
            "/api/v1/memories?session_id={session}&order=asc&limit=100"
        ))
        .await;
    assert_eq!(s, 200, "{who} list asc: {asc}");
    assert_eq!(&ids(&asc, "memories"), want, "{who} list oldest first");
    let (s, found) = api
        .post(
            "/api/v1/search",
            json!({"session_id": session, "limit": 100}),
        )
        .await;
    assert_eq!(s, 200, "{who} search: {found}");
    assert_eq!(&ids(&found, "results"), want, "{who} search");
    let (s, in_session) = api
        .get(&format!("/api/v1/sessions/{session}/memories"))
        .await;
    assert_eq!(s, 200, "{who} session memories: {in_session}");
    assert_eq!(
        &ids(&in_session, "memories"),
        want,
        "{who} session memories"
    );
    let (s, context) = api
        .post(&format!("/api/v1/sessions/{session}/context"), json!({}))
        .await;
    assert_eq!(s, 200, "{who} context: {context}");
    assert_eq!(
        context["memory_count"],
        want.len(),
        "{who} context: {context}"
    );
    let (s, stats) = api.get(&format!("/api/v1/agents/{agent}/stats")).await;
    assert_eq!(s, 200, "{who} stats: {stats}");
    assert_eq!(stats["memory_count"], want.len(), "{who} stats: {stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_memories_vanish_from_every_read_of_every_worker_at_once() {
    let Bound {
        c,
        arc: _arc,
        org,
        key,
    } = bound(PREFIX, "delete-e2e", &[]).await;
    let (read_only, _) = c.key(&org, "read").await.unwrap();
    let w1 = c.worker("delete-1", &[]).await.unwrap();
    let w2 = c.worker("delete-2", &[]).await.unwrap();
    let (one, two) = (Api::new(&w1, Some(&key)), Api::new(&w2, Some(&key)));

    let (s, agent) = one.post("/api/v1/agents", json!({"name": "ops"})).await;
    assert_eq!(s, 201, "{agent}");
    let agent = agent["id"].as_str().unwrap().to_owned();
    let (s, session) = one
        .post("/api/v1/sessions", json!({"agent_id": agent}))
        .await;
    assert_eq!(s, 201, "{session}");
    let session = session["id"].as_str().unwrap().to_owned();
    let mut all = BTreeSet::new();
    let mut by_type = std::collections::HashMap::new();
    for (i, event_type) in ["deploy", "deploy", "alert", "alert", "note"]
        .iter()
        .enumerate()
    {
        let (s, m) = one
            .post(
                "/api/v1/memories",
                json!({"agent_id": agent, "session_id": session,
                       "content": format!("memory {i}"), "event_type": event_type}),
            )
            .await;
        assert_eq!(s, 201, "{m}");
        let id = m["id"].as_str().unwrap().to_owned();
        all.insert(id.clone());
        by_type.entry(*event_type).or_insert_with(Vec::new).push(id);
    }
    for (who, api) in [("worker 1", &one), ("worker 2", &two)] {
        reads_show(api, who, &agent, &session, &all).await;
    }

    // one by id, through worker 1; gone on worker 2 when the answer arrives
    let gone = by_type["note"][0].clone();
    let (s, deleted) = one
        .call("DELETE", &format!("/api/v1/memories/{gone}"), None)
        .await;
    assert_eq!(s, 202, "{deleted}");
    assert_eq!(deleted["dry_run"], false, "{deleted}");
    assert!(
        deleted["erasure"]["id"]
            .as_str()
            .unwrap()
            .starts_with("era_"),
        "{deleted}"
    );
    assert_eq!(deleted["erasure"]["propagated"], true, "{deleted}");
    all.remove(&gone);
    for (who, api) in [("worker 2", &two), ("worker 1", &one)] {
        let (s, got) = api.get(&format!("/api/v1/memories/{gone}")).await;
        assert_eq!(s, 404, "{who}: {got}");
        reads_show(api, who, &agent, &session, &all).await;
    }

    // by filter: a dry run counts, deletes nothing
    let alerts = json!({"session_id": session, "event_types": ["alert"]});
    let mut dry = alerts.clone();
    dry["dry_run"] = json!(true);
    let (s, counted) = two.post("/api/v1/delete", dry).await;
    assert_eq!(s, 200, "{counted}");
    assert_eq!(counted, json!({"dry_run": true, "count": 2}));
    reads_show(&one, "worker 1 after a dry run", &agent, &session, &all).await;
    let (s, deleted) = two.post("/api/v1/delete", alerts).await;
    assert_eq!(s, 202, "{deleted}");
    for id in &by_type["alert"] {
        all.remove(id);
    }
    // an alert written after the delete is not covered by it
    let (s, later) = one
        .post(
            "/api/v1/memories",
            json!({"agent_id": agent, "session_id": session,
                   "content": "a later alert", "event_type": "alert"}),
        )
        .await;
    assert_eq!(s, 201, "{later}");
    all.insert(later["id"].as_str().unwrap().to_owned());
    for (who, api) in [("worker 1", &one), ("worker 2", &two)] {
        reads_show(api, who, &agent, &session, &all).await;
    }
    // by ids
    let deploys = &by_type["deploy"];
    let (s, deleted) = one.post("/api/v1/delete", json!({"ids": deploys})).await;
    assert_eq!(s, 202, "{deleted}");
    for id in deploys {
        all.remove(id);
    }
    for (who, api) in [("worker 1", &one), ("worker 2", &two)] {
        reads_show(api, who, &agent, &session, &all).await;
    }
    assert_eq!(all.len(), 1, "{all:?}");

    // the tenant sees its erasures in progress
    let (s, listed) = two.get("/api/v1/erasures").await;
    assert_eq!(s, 200, "{listed}");
    assert_eq!(listed["count"], 3, "{listed}");
    for e in listed["erasures"].as_array().unwrap() {
        assert!(
            ["requested", "running", "blocked"].contains(&e["state"].as_str().unwrap()),
            "{e}"
        );
        assert!(
            e["requested_by"].as_str().unwrap().starts_with("api_key:"),
            "{e}"
        );
    }

    // bad deletes change nothing and say why
    for (body, field) in [
        (json!({}), "at least one of agent_id"),
        (json!({"ids": ["not an id"]}), "id"),
        (
            json!({"ids": [&gone], "agent_id": agent}),
            "cannot be combined",
        ),
        (json!({"content_contains": "memory"}), "content_contains"),
        (
            json!({"ids": (0..101).map(|i| format!("m{i}")).collect::<Vec<_>>()}),
            "at most 100",
        ),
        (json!({"agent_id": agent, "colour": "red"}), "colour"),
    ] {
        let (s, refused) = one.post("/api/v1/delete", body.clone()).await;
        assert_eq!(s, 400, "{body}: {refused}");
        assert!(error_of(&refused).contains(field), "{body}: {refused}");
    }
    let (s, refused) = one.call("DELETE", "/api/v1/memories/bad%20id", None).await;
    assert_eq!(s, 400, "{refused}");
    let reader = Api::new(&w1, Some(&read_only));
    let (s, refused) = reader
        .call("DELETE", &format!("/api/v1/memories/{gone}"), None)
        .await;
    assert_eq!(s, 403, "{refused}");
    reads_show(&two, "worker 2 after refusals", &agent, &session, &all).await;

    // erasures in progress are bounded per org: a full budget is a 429
    let mut refused = None;
    for round in 0..10 {
        let batch: Vec<String> = (0..100)
            .map(|i| format!("0190a8e2-7c3b-7d4e-8f00-{:012x}", round * 100 + i))
            .collect();
        let (s, body) = one.post("/api/v1/delete", json!({"ids": batch})).await;
        if s == 429 {
            refused = Some(body);
            break;
        }
        assert_eq!(s, 202, "{body}");
    }
    let refused = refused.expect("the budget of erasures in progress is bounded");
    assert!(
        error_of(&refused).contains("still being erased"),
        "{refused}"
    );
}

/// The same over gRPC: a delete by ids hides the memory from gRPC and REST
/// reads, a dry run by filter counts, bad requests are INVALID_ARGUMENT, a
/// read-only key is PERMISSION_DENIED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_deletes_hide_memories_and_refuse_bad_requests() {
    use memtrace_proto::v1 as pb;
    use memtrace_tests::grpc::{channel, with_key};
    use pb::memory_service_client::MemoryServiceClient;

    let Bound {
        c,
        arc: _arc,
        org,
        key,
    } = bound("/memtrace-delete-grpc/v1/", "delete-grpc", &[]).await;
    let (read_only, _) = c.key(&org, "read").await.unwrap();
    let worker = c.worker("delete-grpc", &[]).await.unwrap();
    let rest = Api::new(&worker, Some(&key));
    let mut grpc = MemoryServiceClient::new(channel(&worker.url()).await);

    let mut created = Vec::new();
    for content in ["keep me", "forget me"] {
        let (s, m) = rest
            .post(
                "/api/v1/memories",
                json!({"agent_id": "agent_g", "content": content, "event_type": "note"}),
            )
            .await;
        assert_eq!(s, 201, "{m}");
        created.push(m["id"].as_str().unwrap().to_owned());
    }
    let dry = grpc
        .delete_memories(with_key(
            Some(&key),
            pb::DeleteMemoriesRequest {
                agent_id: "agent_g".into(),
                dry_run: true,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(dry.dry_run && dry.erasure.is_none(), "{dry:?}");
    assert_eq!(dry.count, 2);
    let deleted = grpc
        .delete_memories(with_key(
            Some(&key),
            pb::DeleteMemoriesRequest {
                ids: vec![created[1].clone()],
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let erasure = deleted.erasure.expect("the recorded erasure");
    assert!(
        erasure.id.starts_with("era_") && erasure.propagated,
        "{erasure:?}"
    );
    assert_eq!(erasure.state, "requested");
    assert!(erasure.requested_at_unix_micros > 0);

    let listed = grpc
        .list_memories(with_key(
            Some(&key),
            pb::ListMemoriesRequest {
                agent_id: "agent_g".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = listed.memories.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, [created[0].as_str()]);
    let gone = grpc
        .get_memory(with_key(
            Some(&key),
            pb::GetMemoryRequest {
                id: created[1].clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), tonic::Code::NotFound, "{gone:?}");
    let (s, _) = rest.get(&format!("/api/v1/memories/{}", created[1])).await;
    assert_eq!(s, 404);
    let erasures = grpc
        .list_erasures(with_key(Some(&key), pb::ListErasuresRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(erasures.erasures.len(), 1, "{erasures:?}");
    assert_eq!(erasures.erasures[0].id, erasure.id);

    let empty = grpc
        .delete_memories(with_key(Some(&key), pb::DeleteMemoriesRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(empty.code(), tonic::Code::InvalidArgument, "{empty:?}");
    assert!(
        empty.message().contains("at least one of agent_id"),
        "{empty:?}"
    );
    let denied = grpc
        .delete_memories(with_key(
            Some(&read_only),
            pb::DeleteMemoriesRequest {
                ids: vec![created[0].clone()],
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    let (s, still) = rest.get(&format!("/api/v1/memories/{}", created[0])).await;
    assert_eq!(s, 200, "refused deletes change nothing: {still}");
}

/// Deleting an agent with `?cascade=true` deletes its memories too; without
/// it (the original's call) the memories stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_agent_can_cascade_to_its_memories() {
    let Bound {
        c,
        arc: _arc,
        org: _,
        key,
    } = bound("/memtrace-delete-cascade/v1/", "delete-cascade", &[]).await;
    let worker = c.worker("delete-cascade", &[]).await.unwrap();
    let api = Api::new(&worker, Some(&key));
    let mut agents = Vec::new();
    for name in ["kept", "cascaded", "forgotten"] {
        let (s, agent) = api.post("/api/v1/agents", json!({"name": name})).await;
        assert_eq!(s, 201, "{agent}");
        let id = agent["id"].as_str().unwrap().to_owned();
        let (s, m) = api
            .post(
                "/api/v1/memories",
                json!({"agent_id": id, "content": format!("memory of {name}")}),
            )
            .await;
        assert_eq!(s, 201, "{m}");
        agents.push(id);
    }
    let count = |list: &Value| list["count"].as_u64().unwrap();
    // the original's delete: 204, memories stay
    let (s, _) = api
        .call("DELETE", &format!("/api/v1/agents/{}", agents[2]), None)
        .await;
    assert_eq!(s, 204);
    let (_, left) = api
        .get(&format!("/api/v1/memories?agent_id={}", agents[2]))
        .await;
    assert_eq!(count(&left), 1, "{left}");
    let (s, refused) = api
        .call(
            "DELETE",
            &format!("/api/v1/agents/{}?cascade=maybe", agents[1]),
            None,
        )
        .await;
    assert_eq!(s, 400, "{refused}");
    assert!(error_of(&refused).contains("cascade"), "{refused}");
    let (s, deleted) = api
        .call(
            "DELETE",
            &format!("/api/v1/agents/{}?cascade=true", agents[1]),
            None,
        )
        .await;
    assert_eq!(s, 202, "{deleted}");
    assert!(
        deleted["erasure"]["id"]
            .as_str()
            .unwrap()
            .starts_with("era_"),
        "{deleted}"
    );
    let (_, gone) = api
        .get(&format!("/api/v1/memories?agent_id={}", agents[1]))
        .await;
    assert_eq!(count(&gone), 0, "{gone}");
    let (s, _) = api.get(&format!("/api/v1/agents/{}", agents[1])).await;
    assert_eq!(s, 404);
    let (_, kept) = api
        .get(&format!("/api/v1/memories?agent_id={}", agents[0]))
        .await;
    assert_eq!(count(&kept), 1, "{kept}");
}

/// A delete reaches the data even when the values it names are words Arc's
/// delete API refuses in its `where` text (`set`, `drop`, `sp_`, …): the
/// control plane spells such literals out, so the erasure completes and
/// only the covered memories leave the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_naming_words_arc_refuses_are_still_erased() {
    let Bound {
        c,
        arc,
        org: _,
        key,
    } = bound(
        "/memtrace-delete-words/v1/",
        "delete-words",
        &[("MEMTRACE_CONTROL_PLANE_ERASURE_RECHECK_DELAY_MS", "300")],
    )
    .await;
    let worker = c.worker("delete-words", &[]).await.unwrap();
    let api = Api::new(&worker, Some(&key));
    for (agent, tags, content) in [
        ("drop-bot", vec!["set", "x"], "covered"),
        ("drop-bot", vec!["x"], "other tag"),
        ("wasp_bot", vec!["set"], "other agent"),
    ] {
        let (s, m) = api
            .post(
                "/api/v1/memories",
                json!({"agent_id": agent, "content": content, "tags": tags}),
            )
            .await;
        assert_eq!(s, 201, "{m}");
    }
    assert_eq!(arc.row_count(DB, "events"), 3);
    let (s, deleted) = api
        .post(
            "/api/v1/delete",
            json!({"agent_id": "drop-bot", "tags": ["set"]}),
        )
        .await;
    assert_eq!(s, 202, "{deleted}");
    memtrace_tests::cluster::eventually(
        "the covered memory erased from the store",
        std::time::Duration::from_secs(30),
        async || {
            let (_, listed) = api.get("/api/v1/erasures").await;
            let left = arc.row_count(DB, "events");
            (left == 2 && listed["count"] == 0)
                .then_some(())
                .ok_or(format!("{left} rows; erasures in progress: {listed}"))
        },
    )
    .await
    .unwrap();
    let (_, list) = api.get("/api/v1/memories?limit=100").await;
    let mut contents: Vec<&str> = list["memories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    contents.sort_unstable();
    assert_eq!(contents, ["other agent", "other tag"]);
}

/// Memories past the org's retention (`memories.retention_days`) are
/// hidden from reads as soon as the setting applies, then erased from the
/// store by the control plane's retention sweep; newer ones stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memories_past_retention_are_hidden_then_erased() {
    use memtrace_data_plane::arcdb::{
        ArcClient, ArcTarget, Compression, MemoryBatch, RetryPolicy, compress,
    };
    use memtrace_data_plane::store::MemoryRow;
    use std::time::Duration;
    let Bound { c, arc, org, key } = bound(
        "/memtrace-retention/v1/",
        "retention",
        &[
            ("MEMTRACE_CONTROL_PLANE_ERASURE_RECHECK_DELAY_MS", "300"),
            ("MEMTRACE_CONTROL_PLANE_ERASURE_RETENTION_SWEEP_MS", "300"),
        ],
    )
    .await;
    let worker = c.worker("retention", &[]).await.unwrap();
    let api = Api::new(&worker, Some(&key));
    let (s, recent) = api
        .post(
            "/api/v1/memories",
            json!({"agent_id": "a1", "content": "recent"}),
        )
        .await;
    assert_eq!(s, 201, "{recent}");
    // a memory written three days ago, straight into the tenant's Arc
    let client = ArcClient::new(Duration::from_secs(5), Duration::from_secs(30)).unwrap();
    let target = ArcTarget {
        url: &arc.url(),
        database: DB,
        measurement: "events",
        api_key: Some(ARC_TOKEN),
    };
    let three_days = 3 * 86_400_000_000;
    let mut batch = MemoryBatch::with_capacity(1);
    batch.push(&MemoryRow {
        time: memtrace_data_plane::query::UnixMicros::now().0 - three_days,
        id: "mem_old_1".into(),
        org_id: org.as_str().into(),
        agent_id: "a1".into(),
        memory_type: "episodic".into(),
        event_type: "general".into(),
        content: "old".into(),
        metadata_json: "{}".into(),
        ..MemoryRow::default()
    });
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
    let contents = async || {
        let (_, list) = api.get("/api/v1/memories?agent_id=a1").await;
        let mut got: Vec<String> = list["memories"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["content"].as_str().unwrap().to_owned())
            .collect();
        got.sort_unstable();
        got
    };
    assert_eq!(contents().await, ["old", "recent"]);

    let revision = c.set_config("memories.retention_days", "1").await.unwrap();
    c.wait_applied(revision).await.unwrap();
    assert_eq!(contents().await, ["recent"], "hidden at once");
    let (s, _) = api.get("/api/v1/memories/mem_old_1").await;
    assert_eq!(s, 404);
    memtrace_tests::cluster::eventually(
        "the memory past retention erased from the store",
        Duration::from_secs(30),
        async || {
            let left = arc.row_count(DB, "events");
            (left == 1).then_some(()).ok_or(format!("{left} rows"))
        },
    )
    .await
    .unwrap();
    assert_eq!(contents().await, ["recent"]);
}
