//! The worker's memtrace-compatible REST API over HTTP, against the real
//! `memtrace-worker` binary with a real etcd and control plane (orgs and
//! keys made with `memtracectl`): every route's status codes and bodies on
//! the embedded store (auth 401/403, 400 naming the field, 404, 409,
//! revocation without restart), and on a worker without an embedded store:
//! an org bound to an Arc stand-in (create, list, get by id) next to an
//! unbound org (503 "no arc instance" with a hint).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_tests::api::{Api, error_of};
use memtrace_tests::cluster::{self, Cluster, Probe, arc_with_token};
use serde_json::json;
use std::time::Duration;

const PREFIX: &str = "/memtrace-rest/v1/";
const ARC_TOKEN: &str = "arc-rest-test-token-0123456789";
const ARC_DATABASE: &str = "resttest";

async fn eventually<P: Probe>(what: &str, probe: impl AsyncFnMut() -> P) -> P::Value {
    cluster::eventually(what, Duration::from_secs(20), probe)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_on_the_embedded_store() {
    let c = Cluster::start(PREFIX).await.unwrap();
    let org = c.org("rest-embedded").await.unwrap();
    let (key, key_id) = c.key(&org, "read,write").await.unwrap();
    let (reader, _) = c.key(&org, "read").await.unwrap();
    let embedded = tempfile::tempdir().unwrap();
    let worker = c
        .worker(
            "rest-embedded",
            &[(
                "MEMTRACE_WORKER_EMBEDDED_DIR",
                embedded.path().to_str().unwrap(),
            )],
        )
        .await
        .unwrap();
    let api = Api::new(&worker, Some(&key));

    // auth: missing, invalid, Bearer accepted, read-only key cannot write
    let (s, b) = Api::new(&worker, None).get("/api/v1/memories").await;
    assert_eq!((s, b), (401, json!({"error": "missing API key"})));
    let (s, b) = Api::new(&worker, Some("mtk_nope"))
        .get("/api/v1/memories")
        .await;
    assert_eq!((s, b), (401, json!({"error": "invalid API key"})));
    let bearer = memtrace_tests::http_client()
        .get(format!("{}/api/v1/agents", worker.url()))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 200);
    let read_only = Api::new(&worker, Some(&reader));
    let (s, b) = read_only
        .post("/api/v1/memories", json!({"agent_id": "a", "content": "x"}))
        .await;
    assert_eq!(s, 403, "{b}");
    assert!(error_of(&b).contains("scope"), "{b}");
    assert_eq!(read_only.get("/api/v1/memories").await.0, 200);

    // memories: create, duplicate, validation, batch, list, get, search
    let (s, m) = api
        .post(
            "/api/v1/memories",
            json!({"agent_id": "agent_a", "content": "opened the door", "tags": ["door", "home"],
                   "metadata": {"room": "hall"}, "importance": 0.5}),
        )
        .await;
    assert_eq!(s, 201, "{m}");
    let id = m["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("mem_"), "{m}");
    assert_eq!(m["org_id"], org.as_str());
    assert_eq!(m["memory_type"], "episodic");
    assert_eq!(m["event_type"], "general");
    assert_eq!(m["tags"], json!(["door", "home"]));
    assert_eq!(m["metadata"], json!({"room": "hall"}));
    assert!(m.get("session_id").is_none(), "omitempty: {m}");
    let (s, b) = api
        .post(
            "/api/v1/memories",
            json!({"agent_id": "agent_a", "content": "opened the door"}),
        )
        .await;
    assert_eq!((s, b), (409, json!({"error": "duplicate memory"})));
    let (s, b) = api.post("/api/v1/memories", json!({"content": "x"})).await;
    assert_eq!(s, 400);
    assert!(error_of(&b).contains("agent_id"), "{b}");
    let (s, b) = api
        .post(
            "/api/v1/memories",
            json!({"agent_id": "a", "content": "x", "memory_type": "dream"}),
        )
        .await;
    assert_eq!(s, 400);
    assert!(error_of(&b).contains("memory_type"), "{b}");
    let (s, b) = api
        .post(
            "/api/v1/memories",
            json!({"memories": [
                {"agent_id": "agent_a", "content": "opened the door"},
                {"agent_id": "agent_a", "content": "walked in", "event_type": "move"},
                {"agent_id": "agent_a", "content": "tripped", "event_type": "error"},
            ]}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["count"], 2, "the duplicate is skipped: {b}");

    let (s, list) = api.get("/api/v1/memories?agent_id=agent_a&limit=2").await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(list["count"], 2);
    assert_eq!(list["has_more"], true);
    assert_eq!(list["memories"][0]["content"], "tripped");
    let (_, tagged) = api.get("/api/v1/memories?tags=door").await;
    assert_eq!(tagged["count"], 1, "{tagged}");
    let (s, b) = api.get("/api/v1/memories?since=yesterday").await;
    assert_eq!(s, 400);
    assert!(error_of(&b).contains("since"), "{b}");
    let (s, b) = api.get("/api/v1/memories?limit=ten").await;
    assert_eq!(s, 400);
    assert!(error_of(&b).contains("limit"), "{b}");
    // offsets are bounded up front (a huge one reached the store: 502);
    // the deepest page allowed is an ordinary, empty page
    for offset in ["100001", "9223372036854775807"] {
        let (s, b) = api.get(&format!("/api/v1/memories?offset={offset}")).await;
        assert_eq!(
            (s, b),
            (
                400,
                json!({"error": "invalid offset: must be between 0 and 100000"})
            ),
            "{offset}"
        );
    }
    for order in ["desc", "asc"] {
        let (s, deepest) = api
            .get(&format!("/api/v1/memories?offset=100000&order={order}"))
            .await;
        assert_eq!(s, 200, "{deepest}");
        assert_eq!(
            (deepest["count"].clone(), deepest["has_more"].clone()),
            (json!(0), json!(false)),
            "{deepest}"
        );
    }
    let (s, second) = api
        .get("/api/v1/memories?agent_id=agent_a&limit=1&offset=1")
        .await;
    assert_eq!(s, 200, "{second}");
    assert_eq!(second["memories"][0]["content"], "walked in", "{second}");
    let (s, got) = api.get(&format!("/api/v1/memories/{id}")).await;
    assert_eq!(s, 200);
    assert_eq!(got, m, "read back as created");
    let (s, b) = api.get("/api/v1/memories/mem_unknown").await;
    assert_eq!((s, b), (404, json!({"error": "memory not found"})));
    let (s, found) = api
        .post(
            "/api/v1/search",
            json!({"content_contains": "DOOR", "min_importance": 0.1}),
        )
        .await;
    assert_eq!(s, 200, "{found}");
    assert_eq!(found["count"], 1);
    assert!(found["query_time_ms"].is_u64());
    let (s, b) = api
        .post("/api/v1/search", json!({"event_types": ["bad type"]}))
        .await;
    assert_eq!(s, 400);
    assert!(error_of(&b).contains("event_types"), "{b}");

    // agents: register, conflict, get by id and by (URL-encoded) name
    let (s, agent) = api
        .post(
            "/api/v1/agents",
            json!({"name": "door bot", "description": "opens doors", "config": {"k": 1}}),
        )
        .await;
    assert_eq!(s, 201, "{agent}");
    let agent_id = agent["id"].as_str().unwrap().to_owned();
    assert!(agent_id.starts_with("agent_"));
    assert_eq!(
        api.post("/api/v1/agents", json!({"name": "door bot"}))
            .await
            .0,
        409
    );
    let (s, b) = api.post("/api/v1/agents", json!({})).await;
    assert_eq!(s, 400);
    assert!(error_of(&b).contains("name"), "{b}");
    assert_eq!(
        api.get(&format!("/api/v1/agents/{agent_id}")).await.1,
        agent
    );
    assert_eq!(api.get("/api/v1/agents/door%20bot").await.1, agent);
    let (_, agents) = api.get("/api/v1/agents").await;
    assert_eq!(agents["count"], 1);
    assert_eq!(agents["has_more"], false);
    // lists are paged: limit and offset, bounded
    let (s, b) = api
        .post("/api/v1/agents", json!({"name": "window bot"}))
        .await;
    assert_eq!(s, 201, "{b}");
    let (_, first) = api.get("/api/v1/agents?limit=1").await;
    assert_eq!(
        (first["count"].clone(), first["has_more"].clone()),
        (json!(1), json!(true))
    );
    assert_eq!(first["agents"][0]["name"], "window bot", "newest first");
    let (_, second) = api.get("/api/v1/agents?limit=1&offset=1").await;
    assert_eq!(second["agents"][0]["name"], "door bot");
    assert_eq!(second["has_more"], false);
    let (s, b) = api.get("/api/v1/agents?limit=5000").await;
    assert_eq!(s, 400, "{b}");
    assert!(error_of(&b).contains("limit"), "{b}");
    // back to one agent, as the rest of this test expects
    let window = first["agents"][0]["id"].as_str().unwrap().to_owned();
    let (s, _) = api
        .call("DELETE", &format!("/api/v1/agents/{window}"), None)
        .await;
    assert_eq!(s, 204);
    let (s, b) = api.get("/api/v1/agents/nobody").await;
    assert_eq!((s, b), (404, json!({"error": "agent not found"})));
    assert_eq!(api.get("/api/v1/agents/nobody/stats").await.0, 404);

    // sessions: create by agent name, memories in it, context, close
    let (s, session) = api
        .post(
            "/api/v1/sessions",
            json!({"agent_id": "door bot", "metadata": {"task": "t1"}}),
        )
        .await;
    assert_eq!(s, 201, "{session}");
    let sid = session["id"].as_str().unwrap().to_owned();
    assert!(sid.starts_with("sess_"));
    assert_eq!(session["agent_id"], agent_id.as_str());
    assert_eq!(session["status"], "active");
    let (s, b) = api
        .post("/api/v1/sessions", json!({"agent_id": "nobody"}))
        .await;
    assert_eq!(s, 400);
    assert!(error_of(&b).contains("agent_id"), "{b}");
    for (t, e, content) in [
        ("episodic", "general", "looked around the hall"),
        ("decision", "decision", "take the stairs"),
        ("session", "error", "é".repeat(50).as_str()),
    ] {
        let (s, b) = api
            .post(
                "/api/v1/memories",
                json!({"agent_id": agent_id, "session_id": sid, "memory_type": t,
                       "event_type": e, "content": content}),
            )
            .await;
        assert_eq!(s, 201, "{b}");
    }
    let (s, ctx) = api
        .post(&format!("/api/v1/sessions/{sid}/context"), json!({}))
        .await;
    assert_eq!(s, 200, "{ctx}");
    assert_eq!(ctx["session_id"], sid.as_str());
    assert_eq!(ctx["memory_count"], 3);
    let text = ctx["context"].as_str().unwrap();
    assert!(
        text.starts_with(&format!("## Session Context ({sid})")),
        "{text}"
    );
    assert!(text.contains("### Decisions Made (1)"), "{text}");
    assert!(
        text.contains(&format!("error: {}...", "é".repeat(40))),
        "{text}"
    );
    let (_, small) = api
        .post(
            &format!("/api/v1/sessions/{sid}/context"),
            json!({"max_tokens": 30, "include_types": ["episodic", "decision"]}),
        )
        .await;
    assert!(small["memory_count"].as_u64().unwrap() < 3, "{small}");
    assert!(small["context"].as_str().unwrap().len() <= 120, "{small}");
    let (s, b) = api
        .post("/api/v1/sessions/sess_unknown/context", json!({}))
        .await;
    assert_eq!((s, b), (404, json!({"error": "session not found"})));
    let (s, sm) = api.get(&format!("/api/v1/sessions/{sid}/memories")).await;
    assert_eq!((s, sm["count"].clone()), (200, json!(3)));
    let (_, am) = api
        .get(&format!(
            "/api/v1/agents/{agent_id}/memories?memory_type=decision"
        ))
        .await;
    assert_eq!(am["count"], 1, "{am}");
    let (_, sessions) = api.get("/api/v1/sessions?agent_id=door%20bot").await;
    assert_eq!(sessions["count"], 1, "{sessions}");
    let (s, stats) = api.get("/api/v1/agents/door%20bot/stats").await;
    assert_eq!(s, 200, "{stats}");
    assert_eq!(stats["memory_count"], 3);
    assert_eq!(stats["errors_24h"], 1);
    assert_eq!(stats["active_sessions"], 1);
    assert_eq!(stats["memory_types"]["decision"], 1);
    let (s, closed) = api
        .call(
            "PUT",
            &format!("/api/v1/sessions/{sid}"),
            Some(json!({"status": "closed", "metadata": {"done": true}})),
        )
        .await;
    assert_eq!(s, 200, "{closed}");
    assert!(closed["closed_at"].is_string());
    assert_eq!(closed["metadata"], json!({"done": true}), "replaced");
    assert_eq!(api.get(&format!("/api/v1/sessions/{sid}")).await.1, closed);
    let (s, b) = api
        .call(
            "PUT",
            "/api/v1/sessions/sess_unknown",
            Some(json!({"status": "closed"})),
        )
        .await;
    assert_eq!((s, b), (404, json!({"error": "session not found"})));

    // delete the agent (by name); revoke the key: refused without restart
    assert_eq!(
        api.call("DELETE", "/api/v1/agents/door%20bot", None)
            .await
            .0,
        204
    );
    assert_eq!(api.get(&format!("/api/v1/agents/{agent_id}")).await.0, 404);
    assert_eq!(
        read_only
            .call("DELETE", &format!("/api/v1/agents/{agent_id}"), None)
            .await
            .0,
        403
    );
    // the org's max_payload_bytes applies without restart: 413
    c.ctl
        .json(&[
            "config",
            "set",
            "limits.max_payload_bytes",
            "1024",
            "--org",
            &org,
        ])
        .await
        .unwrap();
    let big = json!({"agent_id": "agent_a", "content": "x".repeat(2048)});
    let b = eventually("payload limit applied", async || {
        let (s, b) = api.post("/api/v1/memories", big.clone()).await;
        if s == 413 {
            Ok(b)
        } else {
            Err(format!("{s} {b}"))
        }
    })
    .await;
    assert!(error_of(&b).contains("max_payload_bytes"), "{b}");

    c.ctl.json(&["key", "revoke", &key_id]).await.unwrap();
    let b = eventually("revoked key refused", async || {
        let (s, b) = api.get("/api/v1/agents").await;
        if s == 401 {
            Ok(b)
        } else {
            Err(format!("{s} {b}"))
        }
    })
    .await;
    assert_eq!(b, json!({"error": "invalid API key"}));
    assert!(!worker.logs().contains(&key), "the key is never logged");
    assert!(worker.stop().await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arc_bound_org_and_unbound_org_without_embedded_store() {
    let c = Cluster::start(PREFIX).await.unwrap();
    // instant answers (arc_with_token): behaviour, not time
    let arc = arc_with_token(ARC_TOKEN, ARC_DATABASE).await.unwrap();
    let bound = c.org("rest-arc").await.unwrap();
    c.add_arc(&bound, &arc.url(), ARC_DATABASE, Some(ARC_TOKEN))
        .await
        .unwrap();
    let (bound_key, _) = c.key(&bound, "read,write").await.unwrap();
    let unbound = c.org("rest-unbound").await.unwrap();
    let (unbound_key, _) = c.key(&unbound, "read,write").await.unwrap();
    let worker = c.worker("rest-arc", &[]).await.unwrap();

    let api = Api::new(&worker, Some(&bound_key));
    let (s, m) = api
        .post(
            "/api/v1/memories",
            json!({"agent_id": "agent_arc", "content": "stored in arc", "tags": ["t"]}),
        )
        .await;
    assert_eq!(s, 201, "{m}\n{}", worker.logs());
    let id = m["id"].as_str().unwrap().to_owned();
    assert_eq!(
        arc.row_count(ARC_DATABASE, "events"),
        1,
        "acknowledged after arc stored it"
    );
    let (s, list) = api.get("/api/v1/memories?agent_id=agent_arc").await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(list["count"], 1);
    assert_eq!(list["memories"][0]["id"], id.as_str());
    let (s, got) = api.get(&format!("/api/v1/memories/{id}")).await;
    assert_eq!(s, 200, "{got}");
    assert_eq!(got, m);
    let (s, b) = api
        .post(
            "/api/v1/memories",
            json!({"agent_id": "agent_arc", "content": "stored in arc"}),
        )
        .await;
    assert_eq!((s, b), (409, json!({"error": "duplicate memory"})));

    let none = Api::new(&worker, Some(&unbound_key));
    for (s, b) in [
        none.get("/api/v1/memories").await,
        none.post("/api/v1/memories", json!({"agent_id": "a", "content": "x"}))
            .await,
    ] {
        assert_eq!(s, 503, "{b}");
        assert!(error_of(&b).to_lowercase().contains("arc instance"), "{b}");
        assert!(b["hint"].is_string(), "{b}");
    }

    // the org's rate limit, applied without restart: 429 + Retry-After
    for (key, value) in [("limits.requests_per_second", "1"), ("limits.burst", "1")] {
        c.ctl
            .json(&["config", "set", key, value, "--org", &bound])
            .await
            .unwrap();
    }
    let http = memtrace_tests::http_client();
    let retry_after = eventually("rate limit applied", async || {
        let r = http
            .get(format!("{}/api/v1/agents", worker.url()))
            .header("x-api-key", &bound_key)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        match (r.status().as_u16(), r.headers().get("retry-after")) {
            (429, Some(retry_after)) => Ok(retry_after.clone()),
            (429, None) => Err("429 without a Retry-After header".to_owned()),
            (status, _) => Err(format!("{status}")),
        }
    })
    .await;
    let secs: u64 = retry_after.to_str().unwrap().parse().unwrap();
    assert!(secs >= 1, "{secs}");
    assert!(worker.stop().await.unwrap().success());
}
