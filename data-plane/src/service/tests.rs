//! The service over a real embedded store: ids, dedup (the index at write
//! time, the collapse at read time), list/get, agents, sessions, context
//! and stats.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::query::{ListParams, SearchParams};
use crate::store::embedded::EmbeddedStores;
use memtrace_common::error::CodedError as _;
use std::time::Duration;

async fn service(dir: &std::path::Path, shared: Arc<ServiceShared>) -> OrgService {
    let stores = EmbeddedStores::new(dir, "events").unwrap();
    let store = stores.open("org_a").await.unwrap();
    OrgService::new(store, "org_a", &EffectiveSettings::new(), shared).unwrap()
}

fn new_memory(agent: &str, content: &str) -> NewMemory {
    NewMemory::try_from(CreateMemoryRequest {
        agent_id: Some(agent.into()),
        content: Some(content.into()),
        ..CreateMemoryRequest::default()
    })
    .unwrap()
}

#[tokio::test]
async fn memories_dedup_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path(), Arc::default()).await;
    let m = svc
        .create_memory(new_memory("agent_x", "hello"))
        .await
        .unwrap();
    assert!(m.id.starts_with("mem_"));
    assert_eq!(m.memory_type, "episodic");
    assert_eq!(m.event_type, "general");
    assert_eq!(m.dedup_key.len(), 32);
    assert!(matches!(
        svc.create_memory(new_memory("agent_x", "hello")).await,
        Err(ServiceError::Duplicate)
    ));
    // a fresh index (another worker) cannot see the key: no store round
    // trip on the write, so the duplicate is stored, and reads show it once
    let other = service(dir.path(), Arc::default()).await;
    let dup = other
        .create_memory(new_memory("agent_x", "hello"))
        .await
        .unwrap();
    assert_ne!(dup.id, m.id);
    assert_eq!(dup.dedup_key, m.dedup_key);
    let batch = other
        .create_memories(vec![
            new_memory("agent_x", "hello"),
            new_memory("agent_x", "b"),
            new_memory("agent_x", "b"),
            new_memory("agent_x", "c"),
        ])
        .await
        .unwrap();
    let contents: Vec<&str> = batch.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(contents, ["b", "c"]);

    let got = svc.get_memory(&m.id).await.unwrap();
    assert_eq!(got, m);
    assert!(matches!(
        svc.get_memory("mem_nope").await,
        Err(ServiceError::NotFound("memory"))
    ));
    let list = svc
        .list_memories(&ListParams {
            agent_id: Some("agent_x".into()),
            limit: Some(2),
            ..ListParams::default()
        })
        .await
        .unwrap();
    assert_eq!(list.count, 2);
    assert!(list.has_more);
    assert_eq!(list.memories[0].content, "c", "newest first");
    let found = svc
        .search(&SearchParams {
            content_contains: Some("HELL".into()),
            ..SearchParams::default()
        })
        .await
        .unwrap();
    assert_eq!(found.count, 1);
    assert_eq!(found.results[0].id, dup.id, "the later duplicate is shown");
    let all = svc.list_memories(&ListParams::default()).await.unwrap();
    let contents: Vec<&str> = all.memories.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(contents, ["c", "b", "hello"]);
    assert!(!all.has_more);
    let bad = svc
        .list_memories(&ListParams {
            since: Some("yesterday".into()),
            ..ListParams::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code().http_status(), 400);
    assert!(bad.to_string().contains("since"), "{bad}");
}

#[tokio::test]
async fn agents_sessions_context_stats() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path(), Arc::default()).await;
    let agent = svc
        .register_agent(
            RegisterAgentRequest {
                name: Some("planner".into()),
                ..RegisterAgentRequest::default()
            }
            .try_into()
            .unwrap(),
        )
        .await
        .unwrap();
    let again = svc
        .register_agent(NewAgent {
            name: "planner".into(),
            description: String::new(),
            config: Default::default(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code().http_status(), 409);
    assert_eq!(svc.get_agent("planner").await.unwrap().id, agent.id);
    assert_eq!(svc.list_agents(all()).await.unwrap().0.len(), 1);

    let session = svc
        .create_session(NewSession {
            agent: "planner".into(),
            metadata: Default::default(),
        })
        .await
        .unwrap();
    assert_eq!(session.agent_id, agent.id, "name resolved to the id");
    assert_eq!(session.status, "active");
    for (t, e, c) in [
        ("episodic", "general", "looked around"),
        ("decision", "decision", "go left"),
        ("session", "error", "fell over"),
    ] {
        let mut m = new_memory(&agent.id, c);
        m.memory_type = crate::query::MemoryType::parse(t).unwrap();
        m.event_type = crate::query::EventType::parse(e).unwrap();
        m.session_id = Some(crate::query::SessionId::parse(&session.id).unwrap());
        svc.create_memory(m).await.unwrap();
    }
    let ctx = svc
        .session_context(&session.id, ContextRequest::default())
        .await
        .unwrap();
    assert_eq!(ctx.memory_count, 3);
    assert!(ctx.context.contains("### Errors (1)"), "{}", ctx.context);
    assert!(matches!(
        svc.session_context("sess_nope", ContextRequest::default())
            .await,
        Err(ServiceError::NotFound("session"))
    ));
    let stats = svc.agent_stats("planner").await.unwrap();
    assert_eq!(stats.memory_count, 3);
    assert_eq!(stats.errors_24h, 1);
    assert_eq!(stats.session_count, 1);
    assert_eq!(stats.active_sessions, 1);
    assert_eq!(stats.memory_types.get("decision"), Some(&1));
    assert!(stats.last_active_at.is_some());

    let closed = svc
        .update_session(
            &session.id,
            SessionUpdate {
                status: Some("closed".into()),
                metadata: None,
            },
        )
        .await
        .unwrap();
    assert!(closed.closed_at.is_some());
    assert_eq!(svc.get_session(&session.id).await.unwrap().status, "closed");
    assert_eq!(svc.agent_stats(&agent.id).await.unwrap().active_sessions, 0);
    assert_eq!(
        svc.session_memories(&session.id, &ListParams::default())
            .await
            .unwrap()
            .count,
        3
    );
    assert_eq!(
        svc.list_sessions(Some("planner"), all())
            .await
            .unwrap()
            .0
            .len(),
        1
    );

    svc.delete_agent("planner", false).await.unwrap();
    assert!(matches!(
        svc.get_agent(&agent.id).await,
        Err(ServiceError::NotFound("agent"))
    ));
    assert!(svc.list_agents(all()).await.unwrap().0.is_empty());
    assert_eq!(
        svc.agent_stats("planner")
            .await
            .unwrap_err()
            .code()
            .http_status(),
        404
    );
}

#[tokio::test]
async fn a_page_shortened_by_duplicates_reads_a_longer_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let first = service(dir.path(), Arc::default()).await;
    let old = first
        .create_memory(new_memory("agent_x", "old"))
        .await
        .unwrap();
    // twelve workers (each its own index) store the same memory: every
    // newest-first prefix of four rows holds only that one memory
    let mut last = None;
    for _ in 0..12 {
        let worker = service(dir.path(), Arc::default()).await;
        last = Some(
            worker
                .create_memory(new_memory("agent_x", "same"))
                .await
                .unwrap(),
        );
    }
    let page = first
        .list_memories(&ListParams {
            agent_id: Some("agent_x".into()),
            limit: Some(2),
            ..ListParams::default()
        })
        .await
        .unwrap();
    let ids: Vec<&str> = page.memories.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, [last.unwrap().id.as_str(), old.id.as_str()]);
    assert!(!page.has_more);
    // an oldest-first page, collapsed in SQL, shows the same two
    let asc = first
        .list_memories(&ListParams {
            agent_id: Some("agent_x".into()),
            order: Some("asc".into()),
            ..ListParams::default()
        })
        .await
        .unwrap();
    let contents: Vec<&str> = asc.memories.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(contents, ["old", "same"]);
    let stats = first.agent_stats("agent_x").await.unwrap();
    assert_eq!(
        stats.memory_count, 2,
        "free-form agent id, duplicates counted once"
    );
    assert!(matches!(
        first.agent_stats("agent_nobody").await,
        Err(ServiceError::NotFound("agent"))
    ));
}

#[tokio::test]
async fn pages_down_to_the_offset_bound() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path(), Arc::default()).await;
    for content in ["a", "b", "c"] {
        svc.create_memory(new_memory("agent_x", content))
            .await
            .unwrap();
    }
    let page = |offset: i64, order: &str| ListParams {
        limit: Some(1),
        offset: Some(offset),
        order: Some(order.into()),
        ..ListParams::default()
    };
    for (order, last) in [("desc", "a"), ("asc", "c")] {
        let list = svc.list_memories(&page(2, order)).await.unwrap();
        assert_eq!(list.memories[0].content, last, "{order}");
        assert!(!list.has_more, "{order}");
        let deepest = svc
            .list_memories(&page(crate::query::MAX_OFFSET as i64, order))
            .await
            .unwrap();
        assert_eq!((deepest.count, deepest.has_more), (0, false), "{order}");
    }
    let past = svc
        .list_memories(&page(crate::query::MAX_OFFSET as i64 + 1, "desc"))
        .await
        .unwrap_err();
    assert_eq!(past.code().http_status(), 400);
    assert_eq!(
        past.to_string(),
        "invalid offset: must be between 0 and 100000"
    );
}

#[tokio::test]
async fn a_registration_in_flight_holds_up_only_its_own_org() {
    let dir = tempfile::tempdir().unwrap();
    let stores = EmbeddedStores::new(dir.path(), "events").unwrap();
    let shared = Arc::new(ServiceShared::default());
    let settings = EffectiveSettings::new();
    let mut orgs = Vec::new();
    for org in ["org_a", "org_b"] {
        let store = stores.open(org).await.unwrap();
        orgs.push(OrgService::new(store, org, &settings, shared.clone()).unwrap());
    }
    let agent = || NewAgent {
        name: "planner".into(),
        description: String::new(),
        config: Default::default(),
    };
    // org A's registration is in flight (say, over a slow Arc)
    let held = shared.register_locks.lock("org_a").await;
    let b = tokio::time::timeout(Duration::from_secs(5), orgs[1].register_agent(agent()))
        .await
        .expect("org B's registration waited on org A's");
    assert_eq!(b.unwrap().org_id, "org_b");
    let a = tokio::time::timeout(Duration::from_millis(200), orgs[0].register_agent(agent())).await;
    assert!(a.is_err(), "org A's registrations stay one at a time");
    drop(held);
    assert_eq!(
        orgs[0].register_agent(agent()).await.unwrap().org_id,
        "org_a"
    );
}

/// Every agent or session up to the page bound.
fn all() -> crate::service::types::RegistryPage {
    crate::service::types::RegistryPage::parse(None, None).unwrap()
}

#[test]
fn registry_pages_are_bounded_and_say_whether_more_follow() {
    use crate::service::types::RegistryPage;
    let page = RegistryPage::parse(Some(2), Some(1)).unwrap();
    assert_eq!(page.take(vec![1, 2, 3, 4]), (vec![2, 3], true));
    assert_eq!(page.take(vec![1, 2, 3]), (vec![2, 3], false));
    assert_eq!(all().limit, RegistryPage::MAX_LIMIT);
    assert_eq!(RegistryPage::parse(Some(0), None).unwrap().limit, 1000);
    for (limit, offset, field) in [
        (Some(1001), None, "limit"),
        (Some(-1), None, "limit"),
        (None, Some(100_001), "offset"),
        (None, Some(-1), "offset"),
    ] {
        let e = RegistryPage::parse(limit, offset).unwrap_err();
        assert!(e.to_string().contains(field), "{e}");
    }
}
