//! `GET /api/v1/export` (and `ExportMemories` over gRPC) against the real
//! `memtrace-worker`, once with the org bound to the Arc stand-in and once
//! on the embedded store: memories written (one id written twice, as a
//! retry that changed its content would be, and one deleted with `DELETE
//! /api/v1/memories/{id}`) are exported with a small page size by
//! following cursors until none is left; every live memory appears exactly
//! once, oldest first, in its newest version, and the deleted one never.
//! The agent filter narrows the export; a bad cursor or limit is a 400
//! naming it; a read-only key exports, a request without a key is 401.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_tests::api::{Api, error_of};
use memtrace_tests::cluster::{Cluster, arc_with_token};
use memtrace_tests::worker::Worker;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

const ARC_TOKEN: &str = "arc-export-test-token-0123456789";
const DB: &str = "exporttest";
const RETRIED: &str = "mem_export_retried_0001";

/// One export page: status, the `x-memtrace-next-cursor` header, the body's
/// lines parsed as JSON, and the content type.
struct Page {
    status: u16,
    header: Option<String>,
    lines: Vec<Value>,
    content_type: String,
}

async fn export_page(worker: &Worker, key: Option<&str>, query: &str) -> Page {
    let mut req = worker
        .client()
        .get(format!("{}/api/v1/export{query}", worker.url()));
    if let Some(key) = key {
        req = req.header("x-api-key", key);
    }
    let resp = req.send().await.expect("the worker answers");
    let status = resp.status().as_u16();
    let header = resp
        .headers()
        .get("x-memtrace-next-cursor")
        .map(|v| v.to_str().unwrap().to_owned());
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = resp.text().await.expect("a readable body");
    let lines = if status == 200 {
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    } else {
        vec![serde_json::from_str(&text).unwrap_or(Value::Null)]
    };
    Page {
        status,
        header,
        lines,
        content_type,
    }
}

/// Follows cursors from the first page to the last; every memory line in
/// order, and how many pages it took.
async fn export_all(worker: &Worker, key: &str, filter: &str, limit: u32) -> (Vec<Value>, usize) {
    let mut memories = Vec::new();
    let mut cursor: Option<String> = None;
    for pages in 1..=100 {
        let mut query = format!("?limit={limit}{filter}");
        if let Some(c) = &cursor {
            query.push_str(&format!("&cursor={c}"));
        }
        let page = export_page(worker, Some(key), &query).await;
        assert_eq!(page.status, 200, "{:?}", page.lines);
        assert_eq!(page.content_type, "application/x-ndjson");
        let mut lines = page.lines;
        let trailing = lines
            .last()
            .and_then(|l| l.get("next_cursor"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        assert_eq!(trailing, page.header, "the header and the last line agree");
        if trailing.is_some() {
            lines.pop();
            assert_eq!(lines.len(), limit as usize, "a page with a cursor is full");
        } else {
            assert!(lines.len() <= limit as usize);
        }
        for line in &lines {
            assert!(line["id"].is_string(), "a memory line: {line}");
        }
        memories.extend(lines);
        match trailing {
            Some(next) => cursor = Some(next),
            None => return (memories, pages),
        }
    }
    panic!("the export never ended");
}

/// Writes the memories, deletes one, and checks every export property on
/// `worker` (`store` names the store in messages).
async fn exports_every_live_memory_once(worker: &Worker, key: &str, reader: &str, store: &str) {
    let api = Api::new(worker, Some(key));
    // agent_a: 6 memories, agent_b: 3; then one id written twice
    let mut live: BTreeMap<String, String> = BTreeMap::new();
    for (i, agent) in ["agent_a", "agent_b", "agent_a", "agent_a", "agent_b"]
        .into_iter()
        .chain(["agent_a", "agent_b", "agent_a", "agent_a"])
        .enumerate()
    {
        let (s, m) = api
            .post(
                "/api/v1/memories",
                json!({"agent_id": agent, "content": format!("{store} memory {i}"),
                       "event_type": "note", "tags": ["export"]}),
            )
            .await;
        assert_eq!(s, 201, "{store}: {m}");
        live.insert(m["id"].as_str().unwrap().to_owned(), agent.to_owned());
    }
    for content in ["retried, first version", "retried, second version"] {
        let (s, m) = api
            .post(
                "/api/v1/memories",
                json!({"id": RETRIED, "agent_id": "agent_a", "content": content}),
            )
            .await;
        assert_eq!(s, 201, "{store}: {m}");
    }
    live.insert(RETRIED.to_owned(), "agent_a".to_owned());
    // delete one of agent_b's
    let gone = live
        .iter()
        .find(|(_, a)| *a == "agent_b")
        .map(|(id, _)| id.clone())
        .unwrap();
    let (s, deleted) = api
        .call("DELETE", &format!("/api/v1/memories/{gone}"), None)
        .await;
    assert_eq!(s, 202, "{store}: {deleted}");
    live.remove(&gone);
    assert_eq!(live.len(), 9);

    // the whole export, 2 per page: each live memory once, oldest first
    let (memories, pages) = export_all(worker, key, "", 2).await;
    assert_eq!(pages, 5, "{store}: 9 memories, 2 per page");
    let ids: Vec<&str> = memories.iter().map(|m| m["id"].as_str().unwrap()).collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(
        unique.len(),
        ids.len(),
        "{store}: a memory exported twice: {ids:?}"
    );
    assert_eq!(
        unique,
        live.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        "{store}: exactly the live memories"
    );
    assert!(
        !unique.contains(gone.as_str()),
        "{store}: the deleted memory"
    );
    let times: Vec<&str> = memories
        .iter()
        .map(|m| m["time"].as_str().unwrap())
        .collect();
    let mut sorted = times.clone();
    sorted.sort_by_key(|t| time_key(t));
    assert_eq!(times, sorted, "{store}: oldest first");
    let retried = memories.iter().find(|m| m["id"] == RETRIED).unwrap();
    assert_eq!(retried["content"], "retried, second version", "{store}");
    // the same shape as GET /api/v1/memories/{id}
    let first = &memories[0];
    let (s, one) = api
        .get(&format!(
            "/api/v1/memories/{}",
            first["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(s, 200, "{one}");
    assert_eq!(&one, first, "{store}: the export's line is the memory");

    // one page of everything; a page size past the end
    let (all, pages) = export_all(worker, key, "", 10_000).await;
    assert_eq!((all.len(), pages), (9, 1), "{store}");
    assert_eq!(
        all, memories,
        "{store}: page size does not change the export"
    );

    // by agent
    let (b, _) = export_all(worker, key, "&agent_id=agent_b", 1).await;
    let want: BTreeSet<&str> = live
        .iter()
        .filter(|(_, a)| *a == "agent_b")
        .map(|(id, _)| id.as_str())
        .collect();
    assert_eq!(want.len(), 2);
    assert_eq!(
        b.iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect::<BTreeSet<_>>(),
        want,
        "{store}: agent_b only"
    );
    assert!(b.iter().all(|m| m["agent_id"] == "agent_b"));

    // bad cursor, bad limit
    for cursor in ["nope!", "bm8tY29sb24", "MTI6YmFkIGlk"] {
        let page = export_page(worker, Some(key), &format!("?cursor={cursor}")).await;
        assert_eq!(page.status, 400, "{store}: {:?}", page.lines);
        assert!(
            error_of(&page.lines[0]).contains("cursor"),
            "{store}: {:?}",
            page.lines
        );
    }
    for limit in ["0x", "-1", "10001"] {
        let page = export_page(worker, Some(key), &format!("?limit={limit}")).await;
        assert_eq!(page.status, 400, "{store}: {:?}", page.lines);
        assert!(
            error_of(&page.lines[0]).contains("limit"),
            "{:?}",
            page.lines
        );
    }

    // a read-only key exports; no key, no export
    let page = export_page(worker, Some(reader), "?limit=100").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.lines.len(), 9, "{store}");
    assert!(page.header.is_none());
    let page = export_page(worker, None, "").await;
    assert_eq!(page.status, 401, "{store}: {:?}", page.lines);
}

/// Microseconds of an RFC 3339 time as the worker writes it
/// (`YYYY-MM-DDTHH:MM:SS[.f]Z`), for ordering.
fn time_key(t: &str) -> (String, u32) {
    let t = t.trim_end_matches('Z');
    let (secs, frac) = t.split_once('.').unwrap_or((t, ""));
    let micros = format!("{frac:0<6}").parse().unwrap();
    (secs.to_owned(), micros)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_pages_every_live_memory_once_on_arc() {
    use memtrace_proto::v1 as pb;
    use memtrace_tests::grpc::{channel, with_key};
    use pb::memory_service_client::MemoryServiceClient;

    let c = Cluster::start("/memtrace-export-arc/v1/").await.unwrap();
    let arc = arc_with_token(ARC_TOKEN, DB).await.unwrap();
    let org = c.org("export-arc").await.unwrap();
    c.add_arc(&org, &arc.url(), DB, Some(ARC_TOKEN))
        .await
        .unwrap();
    let (key, _) = c.key(&org, "read,write").await.unwrap();
    let (reader, _) = c.key(&org, "read").await.unwrap();
    let worker = c.worker("export-arc", &[]).await.unwrap();
    exports_every_live_memory_once(&worker, &key, &reader, "arc").await;

    // gRPC: the same pages, the same cursor
    let (rest, _) = export_all(&worker, &key, "", 4).await;
    let mut grpc = MemoryServiceClient::new(channel(&worker.url()).await);
    let mut ids = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = grpc
            .export_memories(with_key(
                Some(&reader),
                pb::ExportMemoriesRequest {
                    limit: 4,
                    cursor: cursor.clone(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        ids.extend(page.memories.into_iter().map(|m| m.id));
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    assert_eq!(
        ids,
        rest.iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    );
    let bad = grpc
        .export_memories(with_key(
            Some(&key),
            pb::ExportMemoriesRequest {
                cursor: "nope!".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("cursor"), "{}", bad.message());
    let anonymous = grpc
        .export_memories(with_key(None, pb::ExportMemoriesRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_pages_every_live_memory_once_on_the_embedded_store() {
    let c = Cluster::start("/memtrace-export-embedded/v1/")
        .await
        .unwrap();
    let org = c.org("export-embedded").await.unwrap();
    let (key, _) = c.key(&org, "read,write").await.unwrap();
    let (reader, _) = c.key(&org, "read").await.unwrap();
    let embedded = tempfile::tempdir().unwrap();
    let worker = c
        .worker(
            "export-embedded",
            &[(
                "MEMTRACE_WORKER_EMBEDDED_DIR",
                embedded.path().to_str().unwrap(),
            )],
        )
        .await
        .unwrap();
    exports_every_live_memory_once(&worker, &key, &reader, "embedded").await;
}

/// `memtracectl org export`: an operator's export through the worker, with
/// a read-only key minted for it and revoked after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memtracectl_org_export_writes_every_live_memory_once() {
    let c = Cluster::start("/memtrace-export-cli/v1/").await.unwrap();
    let org = c.org("export-cli").await.unwrap();
    let (key, _) = c.key(&org, "read,write").await.unwrap();
    let embedded = tempfile::tempdir().unwrap();
    let worker = c
        .worker(
            "export-cli",
            &[(
                "MEMTRACE_WORKER_EMBEDDED_DIR",
                embedded.path().to_str().unwrap(),
            )],
        )
        .await
        .unwrap();
    let api = Api::new(&worker, Some(&key));
    let mut live = BTreeSet::new();
    for i in 0..5 {
        let agent = if i < 3 { "agent_x" } else { "agent_y" };
        let (s, m) = api
            .post(
                "/api/v1/memories",
                json!({"agent_id": agent, "content": format!("memory {i}")}),
            )
            .await;
        assert_eq!(s, 201, "{m}");
        live.insert(m["id"].as_str().unwrap().to_owned());
    }
    let gone = live.pop_first().unwrap();
    let (s, d) = api
        .call("DELETE", &format!("/api/v1/memories/{gone}"), None)
        .await;
    assert_eq!(s, 202, "{d}");
    let url = worker.url();
    let env = [("MEMTRACE_URL", url.as_str())];
    let out = c
        .ctl
        .run_with_env(&["org", "export", &org, "--page-size", "2"], &env)
        .await
        .unwrap();
    assert!(out.success, "{}\n{}", out.stdout, out.stderr);
    let ids: Vec<String> = out
        .stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap_or_else(|| panic!("a memory per line: {l}"))
                .to_owned()
        })
        .collect();
    assert_eq!(
        ids.iter().cloned().collect::<BTreeSet<_>>(),
        live,
        "{}",
        out.stdout
    );
    assert_eq!(ids.len(), live.len(), "each live memory once");
    assert!(out.stderr.contains("exported 4 memories"), "{}", out.stderr);

    // one agent, into a new private file
    let file = embedded.path().join("agent_y.jsonl");
    let path = file.to_str().unwrap();
    let out = c
        .ctl
        .run_with_env(
            &["org", "export", &org, "--agent", "agent_y", "--out", path],
            &env,
        )
        .await
        .unwrap();
    assert!(out.success, "{}", out.stderr);
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.lines().all(|l| l.contains("agent_y")), "{text}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let again = c
        .ctl
        .run_with_env(&["org", "export", &org, "--out", path], &env)
        .await
        .unwrap();
    assert!(!again.success, "an existing file is never overwritten");
    assert!(again.stderr.contains("--out"), "{}", again.stderr);

    // the minted keys are revoked
    let keys = c
        .ctl
        .json(&["key", "list", "--org", &org, "--all"])
        .await
        .unwrap();
    let minted: Vec<&Value> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["name"].as_str().unwrap().starts_with("org-export-"))
        .collect();
    assert!(!minted.is_empty(), "{keys}");
    assert!(minted.iter().all(|k| k["revoked_at"].is_string()), "{keys}");
}
