//! Per-memory expiry (`ttl` / `expires_at` on create), on both stores: an
//! org bound to the Arc stand-in (instant answers: behaviour, not time)
//! through REST and gRPC, and an org on a worker's embedded store. A memory
//! is readable until it expires, then vanishes from every read at once;
//! the control plane's expiry sweep then erases it from the store with a
//! receipted erasure job (`system:expiry`). Rows written before the
//! `expires_at` column existed stay readable. Bad expiries are 400s naming
//! the field.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_tests::api::{Api, error_of};
use memtrace_tests::arc::client::{RawArcClient, msgpack};
use memtrace_tests::cluster::{Cluster, arc_with_token, eventually};
use serde_json::{Value, json};
use std::time::Duration;

const ARC_TOKEN: &str = "arc-expiry-test-token-0123456789";
const DB: &str = "expirytest";
/// Jobs re-check quickly and the sweeps run often.
const FAST: &[(&str, &str)] = &[
    ("MEMTRACE_CONTROL_PLANE_ERASURE_RECHECK_DELAY_MS", "300"),
    ("MEMTRACE_CONTROL_PLANE_ERASURE_RETENTION_SWEEP_MS", "300"),
];

fn contents(list: &Value, field: &str) -> Vec<String> {
    let mut got: Vec<String> = list[field]
        .as_array()
        .unwrap_or_else(|| panic!("{field} in {list}"))
        .iter()
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect();
    got.sort_unstable();
    got
}

/// What the list, search and export of agent `a1` show.
async fn visible(api: &Api) -> [Vec<String>; 3] {
    let (s, list) = api.get("/api/v1/memories?agent_id=a1&limit=100").await;
    assert_eq!(s, 200, "{list}");
    let (s, found) = api
        .post("/api/v1/search", json!({"agent_id": "a1", "limit": 100}))
        .await;
    assert_eq!(s, 200, "{found}");
    let (s, export) = api.get_text("/api/v1/export?agent_id=a1").await;
    assert_eq!(s, 200, "{export}");
    let mut exported: Vec<String> = export
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["content"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    exported.sort_unstable();
    [
        contents(&list, "memories"),
        contents(&found, "results"),
        exported,
    ]
}

/// Creates `content` for agent `a1` with `extra` fields; its id.
async fn create(api: &Api, content: &str, extra: Value) -> (String, Value) {
    let mut body = json!({"agent_id": "a1", "content": content});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let (s, created) = api.post("/api/v1/memories", body).await;
    assert_eq!(s, 201, "{created}");
    (created["id"].as_str().unwrap().to_owned(), created)
}

/// Waits until every read shows exactly `want`.
async fn wait_visible(api: &Api, want: &[&str]) {
    let want: Vec<String> = want.iter().map(|s| (*s).to_owned()).collect();
    eventually(
        "reads show the unexpired memories",
        Duration::from_secs(15),
        async || {
            let got = visible(api).await;
            if got.iter().all(|g| *g == want) {
                Ok(())
            } else {
                Err(format!("{got:?}"))
            }
        },
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memories_vanish_when_they_expire_then_are_erased_from_arc() {
    use memtrace_proto::v1 as pb;
    use memtrace_tests::grpc::{channel, with_key};
    use pb::memory_service_client::MemoryServiceClient;

    let c = Cluster::start_with_env("/memtrace-expiry/v1/", FAST)
        .await
        .unwrap();
    let arc = arc_with_token(ARC_TOKEN, DB).await.unwrap();
    let org = c.org("expiry").await.unwrap();
    c.add_arc(&org, &arc.url(), DB, Some(ARC_TOKEN))
        .await
        .unwrap();
    let (key, _) = c.key(&org, "read,write").await.unwrap();
    let worker = c.worker("expiry", &[]).await.unwrap();
    let api = Api::new(&worker, Some(&key));

    // a row written before the column existed (the original's columns)
    let old = json!({"m": "events", "columns": {
        "time": [memtrace_data_plane::query::UnixMicros::now().0 - 60_000_000],
        "id": ["mem_before_expiry"], "org_id": [org.as_str()], "agent_id": ["a1"],
        "session_id": [""], "memory_type": ["episodic"], "event_type": ["general"],
        "content": ["written before expiry"], "metadata_json": ["{}"], "tags_csv": [""],
        "dedup_key": [""], "importance": [0.0], "parent_id": [""],
    }});
    let raw =
        RawArcClient::new(arc.url()).with_auth("authorization", &format!("Bearer {ARC_TOKEN}"));
    let (s, text) = raw.write(Some(DB), msgpack(&old)).await.unwrap();
    assert_eq!(s, 204, "{text}");
    wait_visible(&api, &["written before expiry"]).await;
    // the worker gave the measurement the column (one row no read shows);
    // the stand-in's rows are readable once its buffer flushed
    eventually(
        "the expires_at column row",
        Duration::from_secs(10),
        async || {
            let rows = arc.rows(DB, "events").await.map_err(|e| e.to_string())?;
            rows.iter()
                .any(|r| r["id"] == "" && r["org_id"] == org.as_str() && r["expires_at"] == 0)
                .then_some(())
                .ok_or(format!("{rows:?}"))
        },
    )
    .await
    .unwrap();

    // bad expiries change nothing
    for (body, field) in [
        (json!({"ttl": 0}), "ttl"),
        (
            json!({"ttl": 5, "expires_at": "2100-01-01T00:00:00Z"}),
            "ttl",
        ),
        (json!({"expires_at": "2001-01-01T00:00:00Z"}), "expires_at"),
        (json!({"expires_at": "next week"}), "expires_at"),
    ] {
        let mut full = json!({"agent_id": "a1", "content": "bad"});
        full.as_object_mut()
            .unwrap()
            .extend(body.as_object().unwrap().clone());
        let (s, e) = api.post("/api/v1/memories", full).await;
        assert_eq!(s, 400, "{e}");
        assert!(error_of(&e).contains(field), "{e}");
    }

    let (kept, _) = create(&api, "kept", json!({})).await;
    let (short, created) = create(&api, "short ttl", json!({"ttl": 3})).await;
    let expires = created["expires_at"]
        .as_str()
        .expect("expires_at answered")
        .to_owned();
    let at = (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3)).to_string();
    let (by_time, _) = create(&api, "expires_at", json!({"expires_at": at})).await;
    let mut grpc = MemoryServiceClient::new(channel(&worker.url()).await);
    let by_grpc = grpc
        .create_memory(with_key(
            Some(&key),
            pb::CreateMemoryRequest {
                memory: Some(pb::MemoryInput {
                    agent_id: "a1".into(),
                    content: "grpc ttl".into(),
                    ttl_seconds: 3,
                    ..Default::default()
                }),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .memory
        .unwrap();
    assert!(by_grpc.expires_at_unix_micros > 0, "{by_grpc:?}");

    let (s, one) = api.get(&format!("/api/v1/memories/{short}")).await;
    assert_eq!(s, 200, "{one}");
    assert_eq!(one["expires_at"], expires, "the expiry reads back");
    let (s, one) = api.get(&format!("/api/v1/memories/{kept}")).await;
    assert_eq!(s, 200);
    assert!(
        one.get("expires_at").is_none(),
        "no expiry, no field: {one}"
    );
    let all = [
        "expires_at",
        "grpc ttl",
        "kept",
        "short ttl",
        "written before expiry",
    ];
    assert_eq!(
        visible(&api).await,
        [
            all.map(String::from).to_vec(),
            all.map(String::from).to_vec(),
            all.map(String::from).to_vec()
        ]
    );

    // expired: gone from every read, by id too, over REST and gRPC
    wait_visible(&api, &["kept", "written before expiry"]).await;
    for id in [&short, &by_time, &by_grpc.id] {
        let (s, _) = api.get(&format!("/api/v1/memories/{id}")).await;
        assert_eq!(s, 404, "{id}");
    }
    let listed = grpc
        .list_memories(with_key(
            Some(&key),
            pb::ListMemoriesRequest {
                agent_id: "a1".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut got: Vec<&str> = listed.memories.iter().map(|m| m.content.as_str()).collect();
    got.sort_unstable();
    assert_eq!(got, ["kept", "written before expiry"]);

    // then erased from the store by a receipted expiry job
    eventually(
        "expired memories erased",
        Duration::from_secs(30),
        async || {
            let rows = arc.rows(DB, "events").await.map_err(|e| e.to_string())?;
            let ids: Vec<&str> = rows.iter().filter_map(|r| r["id"].as_str()).collect();
            let gone = [&short, &by_time, &by_grpc.id]
                .iter()
                .all(|id| !ids.contains(&id.as_str()));
            (gone && ids.contains(&kept.as_str()))
                .then_some(())
                .ok_or(format!("{ids:?}"))
        },
    )
    .await
    .unwrap();
    let jobs = c
        .ctl
        .json(&["erasure", "list", "--org", &org])
        .await
        .unwrap();
    let job = jobs["erasures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["requested_by"] == "system:expiry")
        .unwrap_or_else(|| panic!("an expiry job in {jobs}"))
        .clone();
    let id = job["erasure_id"].as_str().unwrap();
    let done = eventually("the expiry job done", Duration::from_secs(15), async || {
        let job = c
            .ctl
            .json(&["erasure", "show", id])
            .await
            .map_err(|e| e.to_string())?;
        (job["state"] == "done")
            .then(|| job.clone())
            .ok_or(job.to_string())
    })
    .await
    .unwrap();
    assert_eq!(
        done["receipt"]["receipt"]["scope"]["kind"], "expired",
        "{done}"
    );
    assert_eq!(visible(&api).await[0], ["kept", "written before expiry"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memories_expire_and_are_erased_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().to_str().unwrap().to_owned();
    let mut env = FAST.to_vec();
    env.push(("MEMTRACE_WORKER_EMBEDDED_DIR", &dir_path));
    let c = Cluster::start_with_env("/memtrace-expiry-embedded/v1/", &env)
        .await
        .unwrap();
    let org = c.org("expiry-embedded").await.unwrap();
    let (key, _) = c.key(&org, "read,write").await.unwrap();
    let worker = c
        .worker(
            "expiry-embedded",
            &[("MEMTRACE_WORKER_EMBEDDED_DIR", &dir_path)],
        )
        .await
        .unwrap();
    let api = Api::new(&worker, Some(&key));
    let (_, _) = create(&api, "kept", json!({})).await;
    let (short, _) = create(&api, "short ttl", json!({"ttl": 2})).await;
    assert_eq!(visible(&api).await[0], ["kept", "short ttl"]);
    wait_visible(&api, &["kept"]).await;
    let file = dir.path().join(format!("{org}.db"));
    eventually(
        "the expired memory erased from the file",
        Duration::from_secs(30),
        async || {
            let db = rusqlite::Connection::open(&file).map_err(|e| e.to_string())?;
            let n: i64 = db
                .query_row("SELECT COUNT(*) FROM events WHERE id = ?1", [&short], |r| {
                    r.get(0)
                })
                .map_err(|e| e.to_string())?;
            (n == 0).then_some(()).ok_or(format!("{n} rows of {short}"))
        },
    )
    .await
    .unwrap();
    assert_eq!(visible(&api).await[0], ["kept"]);
}
