//! Visible once, whatever the workers did. Two `memtrace-worker` processes
//! share one org bound to an Arc stand-in (answering instantly: behaviour,
//! not time). Writes no single worker can recognise as duplicates — the
//! same dedup key sent to both workers, and a write retried on the other
//! worker with the same id after a lost ack — are all acknowledged and all
//! stored, and every read of every worker shows each memory once: list
//! (newest and oldest first, a deep page), agent memories, search, get by
//! id, session memories, session context and agent stats. A worker that
//! already holds a key answers 409 at once. With dedup off, reads still
//! collapse retried ids (and only those).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_tests::api::{Api, error_of};
use memtrace_tests::cluster::{Cluster, arc_with_token};
use serde_json::{Value, json};
use std::collections::BTreeSet;

const PREFIX: &str = "/memtrace-dedup/v1/";
const ARC_TOKEN: &str = "arc-dedup-test-token-0123456789";
const DB: &str = "deduptest";
const MEASUREMENT: &str = "events";

fn ids(list: &Value, field: &str) -> Vec<String> {
    list[field]
        .as_array()
        .unwrap_or_else(|| panic!("{field} in {list}"))
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Asserts `got` holds each of `want` exactly once, and nothing else.
fn once(what: &str, got: &[String], want: &BTreeSet<String>) {
    let distinct: BTreeSet<String> = got.iter().cloned().collect();
    assert_eq!(
        distinct.len(),
        got.len(),
        "{what}: an id shown twice: {got:?}"
    );
    assert_eq!(&distinct, want, "{what}");
}

async fn create(api: &Api, body: Value) -> (u16, Value) {
    api.post("/api/v1/memories", body).await
}

/// Every read of `api` for `agent` in `session` shows `want` once.
async fn every_read_shows_once(
    api: &Api,
    who: &str,
    agent: &str,
    session: &str,
    want: &BTreeSet<String>,
) {
    let n = want.len();
    let (s, list) = api.get(&format!("/api/v1/memories?agent_id={agent}")).await;
    assert_eq!(s, 200, "{who} list: {list}");
    once(&format!("{who} list"), &ids(&list, "memories"), want);
    assert_eq!(list["count"], n, "{who} list: {list}");

    let (s, asc) = api
        .get(&format!("/api/v1/memories?agent_id={agent}&order=asc"))
        .await;
    assert_eq!(s, 200, "{who} list asc: {asc}");
    once(
        &format!("{who} list oldest first"),
        &ids(&asc, "memories"),
        want,
    );

    // two pages of two: together every memory once
    let mut paged = Vec::new();
    for offset in [0, 2] {
        let (s, page) = api
            .get(&format!(
                "/api/v1/memories?agent_id={agent}&limit=2&offset={offset}"
            ))
            .await;
        assert_eq!(s, 200, "{who} page: {page}");
        paged.extend(ids(&page, "memories"));
    }
    once(&format!("{who} pages"), &paged, want);

    let (s, by_agent) = api.get(&format!("/api/v1/agents/{agent}/memories")).await;
    assert_eq!(s, 200, "{who} agent memories: {by_agent}");
    once(
        &format!("{who} agent memories"),
        &ids(&by_agent, "memories"),
        want,
    );

    let (s, found) = api
        .post("/api/v1/search", json!({"agent_id": agent, "limit": 100}))
        .await;
    assert_eq!(s, 200, "{who} search: {found}");
    once(&format!("{who} search"), &ids(&found, "results"), want);

    let (s, found) = api
        .post(
            "/api/v1/search",
            json!({"agent_id": agent, "content_contains": "deployed"}),
        )
        .await;
    assert_eq!(s, 200, "{who} content search: {found}");
    assert_eq!(found["count"], 1, "{who} content search: {found}");

    let (s, in_session) = api
        .get(&format!("/api/v1/sessions/{session}/memories"))
        .await;
    assert_eq!(s, 200, "{who} session memories: {in_session}");
    once(
        &format!("{who} session memories"),
        &ids(&in_session, "memories"),
        want,
    );

    let (s, context) = api
        .post(&format!("/api/v1/sessions/{session}/context"), json!({}))
        .await;
    assert_eq!(s, 200, "{who} context: {context}");
    assert_eq!(context["memory_count"], n, "{who} context: {context}");
    let text = context["context"].as_str().unwrap();
    assert_eq!(
        text.matches("deployed v2").count(),
        1,
        "{who} context shows the duplicate once: {text}"
    );

    let (s, stats) = api.get(&format!("/api/v1/agents/{agent}/stats")).await;
    assert_eq!(s, 200, "{who} stats: {stats}");
    assert_eq!(stats["memory_count"], n, "{who} stats: {stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_no_single_worker_saw_are_visible_once_on_every_read() {
    let c = Cluster::start(PREFIX).await.unwrap();
    // instant answers and no flush delay: behaviour, not time
    let arc = arc_with_token(ARC_TOKEN, DB).await.unwrap();
    let org = c.org("dedup-e2e").await.unwrap();
    c.add_arc(&org, &arc.url(), DB, Some(ARC_TOKEN))
        .await
        .unwrap();
    let (key, _) = c.key(&org, "read,write").await.unwrap();
    let w1 = c.worker("dedup-1", &[]).await.unwrap();
    let w2 = c.worker("dedup-2", &[]).await.unwrap();
    let (one, two) = (Api::new(&w1, Some(&key)), Api::new(&w2, Some(&key)));

    let (s, agent) = one.post("/api/v1/agents", json!({"name": "ops"})).await;
    assert_eq!(s, 201, "{agent}");
    let agent = agent["id"].as_str().unwrap().to_owned();
    let (s, session) = one
        .post("/api/v1/sessions", json!({"agent_id": agent}))
        .await;
    assert_eq!(s, 201, "{session}");
    let session = session["id"].as_str().unwrap().to_owned();
    let memory = |content: &str| {
        json!({"agent_id": agent, "session_id": session, "content": content,
               "event_type": "deploy"})
    };

    // an automatic key (agent|event type|content): each worker takes it
    // once, since neither sees the other's index; the one that already
    // holds it answers 409
    let (s, first) = create(&one, memory("deployed v2 to production")).await;
    assert_eq!(s, 201, "{first}");
    let (s, later) = create(&two, memory("deployed v2 to production")).await;
    assert_eq!(s, 201, "the other worker cannot know the key: {later}");
    let (s, refused) = create(&one, memory("deployed v2 to production")).await;
    assert_eq!(s, 409, "{refused}");
    assert_eq!(error_of(&refused), "duplicate memory");

    // a client dedup key with different contents, one write per worker
    let mut keyed = memory("order 42 shipped");
    keyed["dedup_key"] = json!("order-42");
    let (s, keyed_first) = create(&one, keyed.clone()).await;
    assert_eq!(s, 201, "{keyed_first}");
    keyed["content"] = json!("order 42 shipped (resent)");
    let (s, keyed_later) = create(&two, keyed).await;
    assert_eq!(s, 201, "{keyed_later}");

    // a retry after a lost ack: the same id and body, on the other worker
    let mut retried = memory("rolled back v1");
    retried["id"] = json!("mem_client_retry_1");
    let (s, r1) = create(&one, retried.clone()).await;
    assert_eq!(s, 201, "{r1}");
    let (s, r2) = create(&two, retried).await;
    assert_eq!(s, 201, "{r2}");
    assert_eq!(r1["id"], r2["id"]);

    let (s, unique) = create(&two, memory("paged the on-call engineer")).await;
    assert_eq!(s, 201, "{unique}");

    // all seven writes reached Arc: the duplicates are real rows there
    assert_eq!(arc.row_count(DB, MEASUREMENT), 7);

    // of two duplicates by key, reads show the later; a retried id once
    let want: BTreeSet<String> = [&later, &keyed_later, &r1, &unique]
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    for (who, api) in [("worker 1", &one), ("worker 2", &two)] {
        every_read_shows_once(api, who, &agent, &session, &want).await;
        let (s, got) = api.get("/api/v1/memories/mem_client_retry_1").await;
        assert_eq!(s, 200, "{who}: {got}");
        assert_eq!(got["content"], "rolled back v1");
    }

    // dedup off: a retried id still collapses, by key nothing does
    let revision = c.set_config("dedup.enabled", "false").await.unwrap();
    c.wait_applied(revision).await.unwrap();
    let (s, _) = create(&one, memory("deployed v2 to production")).await;
    assert_eq!(s, 201, "no 409 with dedup off");
    let mut retried = memory("restarted the api");
    retried["id"] = json!("mem_client_retry_2");
    for api in [&one, &two] {
        let (s, b) = create(api, retried.clone()).await;
        assert_eq!(s, 201, "{b}");
    }
    assert_eq!(arc.row_count(DB, MEASUREMENT), 10);
    for (who, api) in [("worker 1", &one), ("worker 2", &two)] {
        let (s, list) = api.get(&format!("/api/v1/memories?agent_id={agent}")).await;
        assert_eq!(s, 200, "{list}");
        let got = ids(&list, "memories");
        let distinct: BTreeSet<&String> = got.iter().collect();
        assert_eq!(
            distinct.len(),
            got.len(),
            "{who}: an id shown twice: {got:?}"
        );
        // 3 copies of the automatic key, 2 of the client key, 2 retried ids,
        // the unique one: every key duplicate shows, each id once
        assert_eq!(got.len(), 3 + 2 + 2 + 1, "{who}: {got:?}");
    }
}
