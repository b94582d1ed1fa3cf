//! Memories the original Go memtrace wrote into an org's Arc (its column
//! set: no `id`, no `expires_at`) are read through every read API with a
//! stable id derived from the row (`lg_` + the first 32 hex of the SHA-256
//! of time µs, agent, session, memory type, event type and content joined
//! by U+001F), next to memories written since, and can be updated and
//! deleted like them — the delete erased from the store by its job. A
//! client cannot choose an `lg_` id.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_tests::api::{Api, error_of};
use memtrace_tests::arc::client::{RawArcClient, msgpack};
use memtrace_tests::cluster::{Cluster, arc_with_token, eventually};
use serde_json::{Value, json};
use sha2::Digest as _;
use std::time::Duration;

const ARC_TOKEN: &str = "arc-legacy-rows-token-0123456789";
const DB: &str = "legacyrows";

/// One row as the original wrote it.
struct Old {
    time: i64,
    agent: &'static str,
    session: &'static str,
    memory_type: &'static str,
    content: &'static str,
}

impl Old {
    /// The documented derived id.
    fn id(&self) -> String {
        let text = [
            self.time.to_string().as_str(),
            self.agent,
            self.session,
            self.memory_type,
            "general",
            self.content,
        ]
        .join("\u{1f}");
        let hash = hex::encode(sha2::Sha256::digest(text.as_bytes()));
        format!("lg_{}", &hash[..32])
    }
}

/// Writes `rows` for `org` in the original's columns.
async fn write_original(arc: &memtrace_tests::arc::ArcStandIn, org: &str, rows: &[Old]) {
    let n = rows.len();
    let col = |f: fn(&Old) -> Value| rows.iter().map(f).collect::<Vec<_>>();
    let body = json!({"m": "events", "columns": {
        "time": col(|r| json!(r.time)),
        "org_id": vec![org; n],
        "agent_id": col(|r| json!(r.agent)),
        "session_id": col(|r| json!(r.session)),
        "memory_type": col(|r| json!(r.memory_type)),
        "event_type": vec!["general"; n],
        "content": col(|r| json!(r.content)),
        "metadata_json": vec!["{}"; n],
        "tags_csv": vec!["old"; n],
        "dedup_key": vec![""; n],
        "importance": vec![0.5; n],
        "parent_id": vec![""; n],
    }});
    let raw =
        RawArcClient::new(arc.url()).with_auth("authorization", &format!("Bearer {ARC_TOKEN}"));
    let (s, text) = raw.write(Some(DB), msgpack(&body)).await.unwrap();
    assert_eq!(s, 204, "{text}");
}

fn ids(list: &Value, field: &str) -> Vec<String> {
    let mut ids: Vec<String> = list[field]
        .as_array()
        .unwrap_or_else(|| panic!("{field} in {list}"))
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort_unstable();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_originals_rows_are_read_updated_and_deleted_with_derived_ids() {
    let c = Cluster::start_with_env(
        "/memtrace-legacy-rows/v1/",
        &[("MEMTRACE_CONTROL_PLANE_ERASURE_RECHECK_DELAY_MS", "300")],
    )
    .await
    .unwrap();
    let arc = arc_with_token(ARC_TOKEN, DB).await.unwrap();
    let org = c.org("legacy-rows").await.unwrap();
    c.add_arc(&org, &arc.url(), DB, Some(ARC_TOKEN))
        .await
        .unwrap();
    let (key, _) = c.key(&org, "read,write").await.unwrap();
    let worker = c.worker("legacy-rows", &[]).await.unwrap();
    let api = Api::new(&worker, Some(&key));

    let now = memtrace_data_plane::query::UnixMicros::now().0;
    let old = [
        Old {
            time: now - 3_000_000,
            agent: "agent_old",
            session: "sess_old",
            memory_type: "episodic",
            content: "deployed v1",
        },
        Old {
            time: now - 2_000_000,
            agent: "agent_old",
            session: "sess_old",
            memory_type: "decision",
            content: "chose postgres",
        },
        Old {
            time: now - 1_000_000,
            agent: "agent_old",
            session: "",
            memory_type: "entity",
            content: "the billing service",
        },
    ];
    write_original(&arc, &org, &old).await;
    let mut want: Vec<String> = old.iter().map(Old::id).collect();
    want.sort_unstable();

    // a measurement only the original wrote: every read, twice the same ids
    for _ in 0..2 {
        let (s, list) = api.get("/api/v1/memories?agent_id=agent_old").await;
        assert_eq!(s, 200, "{list}");
        assert_eq!(ids(&list, "memories"), want, "{list}");
    }
    let (s, found) = api
        .post(
            "/api/v1/search",
            json!({"memory_types": ["decision"], "content_contains": "postgres"}),
        )
        .await;
    assert_eq!(s, 200, "{found}");
    assert_eq!(ids(&found, "results"), [old[1].id()]);
    let (s, one) = api.get(&format!("/api/v1/memories/{}", old[0].id())).await;
    assert_eq!(s, 200, "{one}");
    assert_eq!(one["content"], "deployed v1");
    assert_eq!(one["tags"], json!(["old"]));
    // (the original's sessions themselves are imported with its database)
    let (s, in_session) = api.get("/api/v1/memories?session_id=sess_old").await;
    assert_eq!(s, 200, "{in_session}");
    assert_eq!(ids(&in_session, "memories").len(), 2);
    let (s, stats) = api.get("/api/v1/agents/agent_old/stats").await;
    assert_eq!(s, 200, "{stats}");
    assert_eq!(stats["memory_count"], 3, "{stats}");
    let (s, export) = api.get_text("/api/v1/export?agent_id=agent_old").await;
    assert_eq!(s, 200);
    assert_eq!(export.lines().count(), 3, "{export}");

    // memories written since sit beside them
    let (s, new) = api
        .post(
            "/api/v1/memories",
            json!({"agent_id": "agent_old", "content": "deployed v2"}),
        )
        .await;
    assert_eq!(s, 201, "{new}");
    let (s, refused) = api
        .post(
            "/api/v1/memories",
            json!({"id": "lg_0123", "agent_id": "a", "content": "x"}),
        )
        .await;
    assert_eq!(s, 400, "{refused}");
    assert!(error_of(&refused).contains("lg_"), "{refused}");
    let (_, list) = api.get("/api/v1/memories?agent_id=agent_old").await;
    assert_eq!(ids(&list, "memories").len(), 4, "{list}");

    // updated like any memory: same id, newest version, history
    let (s, updated) = api
        .call(
            "PATCH",
            &format!("/api/v1/memories/{}", old[1].id()),
            Some(json!({"content": "chose postgres 17"})),
        )
        .await;
    assert_eq!(s, 200, "{updated}");
    assert_eq!(updated["id"], old[1].id().as_str());
    let (s, one) = api.get(&format!("/api/v1/memories/{}", old[1].id())).await;
    assert_eq!(s, 200, "{one}");
    assert_eq!(one["content"], "chose postgres 17");
    let (s, history) = api
        .get(&format!("/api/v1/memories/{}/history", old[1].id()))
        .await;
    assert_eq!(s, 200, "{history}");
    let versions: Vec<&str> = history["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["content"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["chose postgres 17", "chose postgres"]);
    let (_, list) = api.get("/api/v1/memories?agent_id=agent_old").await;
    assert_eq!(
        ids(&list, "memories").len(),
        4,
        "one memory, updated: {list}"
    );

    // deleted like any memory: hidden at once, then erased from the store
    let (s, deleted) = api
        .call("DELETE", &format!("/api/v1/memories/{}", old[0].id()), None)
        .await;
    assert_eq!(s, 202, "{deleted}");
    let (s, _) = api.get(&format!("/api/v1/memories/{}", old[0].id())).await;
    assert_eq!(s, 404);
    let contents = async || {
        arc.rows(DB, "events")
            .await
            .unwrap()
            .iter()
            .filter_map(|r| r["content"].as_str().map(str::to_owned))
            .collect::<Vec<_>>()
    };
    eventually(
        "the original's rows deleted and superseded erased",
        Duration::from_secs(40),
        async || {
            let left = contents().await;
            let gone = !left
                .iter()
                .any(|c| c == "deployed v1" || c == "chose postgres");
            gone.then_some(()).ok_or(format!("{left:?}"))
        },
    )
    .await
    .unwrap();
    let left = contents().await;
    assert!(left.iter().any(|c| c == "the billing service"), "{left:?}");
    let (_, list) = api.get("/api/v1/memories?agent_id=agent_old").await;
    let mut want = vec![
        old[1].id(),
        old[2].id(),
        new["id"].as_str().unwrap().to_owned(),
    ];
    want.sort_unstable();
    assert_eq!(ids(&list, "memories"), want);
}
