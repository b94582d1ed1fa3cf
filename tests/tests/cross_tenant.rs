//! No request ever reads or writes another org's data, whatever it asks
//! for. A seeded random walk (the seed is printed; set
//! `MEMTRACE_CROSS_TENANT_SEED` to replay one) over three orgs, each bound
//! to its own database on an Arc stand-in with its own token, two worker
//! processes, and keys with and without `write`: writes over REST, gRPC
//! unary and gRPC streaming; reads over REST and gRPC (list, search, get by
//! id — including ids of other orgs' memories —, session context, agent
//! stats). Every answer holds only the key's org's memories, every
//! acknowledged write is read back by its own org exactly once, read-only
//! keys never write. And a deleted org's keys stay refused when an org of
//! the same name is created again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_proto::v1 as pb;
use memtrace_tests::api::Api;
use memtrace_tests::arc::{ArcStandIn, CostModel, TokenGrant};
use memtrace_tests::cluster::Cluster;
use memtrace_tests::grpc::{channel, with_key};
use pb::item_result::Outcome;
use pb::memory_service_client::MemoryServiceClient;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use tonic::Code;

const PREFIX: &str = "/memtrace-tenants/v1/";
const STEPS: usize = 120;
const AGENTS: [&str; 3] = ["agent_a", "agent_b", "agent_c"];

struct Tenant {
    org: String,
    writer: String,
    reader: String,
    /// Acknowledged memory ids with their agent and content.
    written: BTreeMap<String, (String, String)>,
}

fn req<T>(key: &str, message: T) -> tonic::Request<T> {
    with_key(Some(key), message)
}

/// Every memory of a REST answer belongs to `org` and carries its marker.
fn only_own(what: &str, memories: &Value, org: &str) -> Vec<String> {
    let list = memories
        .as_array()
        .unwrap_or_else(|| panic!("{what}: {memories}"));
    list.iter()
        .map(|m| {
            assert_eq!(m["org_id"], org, "{what}: another org's memory {m}");
            let content = m["content"].as_str().unwrap();
            assert!(content.starts_with(&format!("{org}|")), "{what}: {m}");
            m["id"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_reaches_another_orgs_data() {
    let seed: u64 = std::env::var("MEMTRACE_CROSS_TENANT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("cross-tenant walk seed {seed} (MEMTRACE_CROSS_TENANT_SEED replays it)");
    let mut rng = StdRng::seed_from_u64(seed);

    let c = Cluster::start(PREFIX).await.unwrap();
    // instant answers, no flush delay: behaviour, not time
    let mut builder = ArcStandIn::builder().cost_model(CostModel::instant());
    for i in 0..3 {
        builder = builder.token(
            format!("arc-tenant-token-{i}-0123456789"),
            TokenGrant::databases([format!("tenant{i}")]),
        );
    }
    let arc = builder.start().await.unwrap();
    let mut tenants = Vec::new();
    for i in 0..3 {
        let org = c.org(&format!("tenant-{i}")).await.unwrap();
        let token = format!("arc-tenant-token-{i}-0123456789");
        c.add_arc(&org, &arc.url(), &format!("tenant{i}"), Some(&token))
            .await
            .unwrap();
        let (writer, _) = c.key(&org, "read,write").await.unwrap();
        let (reader, _) = c.key(&org, "read").await.unwrap();
        tenants.push(Tenant {
            org,
            writer,
            reader,
            written: BTreeMap::new(),
        });
    }
    let workers = [
        c.worker("tenants-1", &[]).await.unwrap(),
        c.worker("tenants-2", &[]).await.unwrap(),
    ];
    let channels = [
        channel(&workers[0].url()).await,
        channel(&workers[1].url()).await,
    ];

    for step in 0..STEPS {
        let t = rng.random_range(0..tenants.len());
        let w = rng.random_range(0..workers.len());
        let agent = AGENTS[rng.random_range(0..AGENTS.len())];
        let org = tenants[t].org.clone();
        let content = format!("{org}|step {step}");
        let mut grpc = MemoryServiceClient::new(channels[w].clone());
        let input = pb::MemoryInput {
            agent_id: agent.into(),
            content: content.clone(),
            ..pb::MemoryInput::default()
        };
        match rng.random_range(0..8) {
            // writes, each way
            0 => {
                let api = Api::new(&workers[w], Some(&tenants[t].writer));
                let (s, m) = api
                    .post(
                        "/api/v1/memories",
                        json!({"agent_id": agent, "content": content}),
                    )
                    .await;
                assert_eq!(s, 201, "{m}");
                assert_eq!(m["org_id"], org.as_str());
                tenants[t]
                    .written
                    .insert(m["id"].as_str().unwrap().into(), (agent.into(), content));
            }
            1 => {
                let m = grpc
                    .create_memory(req(
                        &tenants[t].writer,
                        pb::CreateMemoryRequest {
                            memory: Some(input),
                        },
                    ))
                    .await
                    .unwrap()
                    .into_inner()
                    .memory
                    .unwrap();
                assert_eq!(m.org_id, org);
                tenants[t].written.insert(m.id, (agent.into(), content));
            }
            2 => {
                let n = rng.random_range(1..4);
                let memories: Vec<pb::MemoryInput> = (0..n)
                    .map(|i| pb::MemoryInput {
                        content: format!("{content} #{i}"),
                        ..input.clone()
                    })
                    .collect();
                let batch = pb::WriteBatch {
                    sequence: 1,
                    memories: memories.clone(),
                };
                let mut acks = grpc
                    .stream_memories(req(&tenants[t].writer, tokio_stream::iter([batch])))
                    .await
                    .unwrap()
                    .into_inner();
                let ack = acks.message().await.unwrap().unwrap();
                for (r, m) in ack.results.iter().zip(memories) {
                    assert_eq!(r.outcome(), Outcome::Created, "{ack:?}");
                    tenants[t]
                        .written
                        .insert(r.id.clone(), (agent.into(), m.content));
                }
            }
            // a read-only key never writes
            3 => {
                let status = grpc
                    .create_memory(req(
                        &tenants[t].reader,
                        pb::CreateMemoryRequest {
                            memory: Some(input),
                        },
                    ))
                    .await
                    .unwrap_err();
                assert_eq!(status.code(), Code::PermissionDenied);
                let api = Api::new(&workers[w], Some(&tenants[t].reader));
                let (s, _) = api
                    .post(
                        "/api/v1/memories",
                        json!({"agent_id": agent, "content": content}),
                    )
                    .await;
                assert_eq!(s, 403);
            }
            // reads, each way: only the key's org
            4 => {
                let api = Api::new(&workers[w], Some(&tenants[t].reader));
                let (s, list) = api
                    .get(&format!("/api/v1/memories?agent_id={agent}&limit=1000"))
                    .await;
                assert_eq!(s, 200, "{list}");
                only_own("list", &list["memories"], &org);
                let (s, found) = api
                    .post(
                        "/api/v1/search",
                        json!({"content_contains": "step", "limit": 1000}),
                    )
                    .await;
                assert_eq!(s, 200, "{found}");
                only_own("search", &found["results"], &org);
            }
            5 => {
                let found = grpc
                    .search_memories(req(
                        &tenants[t].reader,
                        pb::SearchMemoriesRequest {
                            agent_id: agent.into(),
                            limit: 1000,
                            ..pb::SearchMemoriesRequest::default()
                        },
                    ))
                    .await
                    .unwrap()
                    .into_inner();
                for m in &found.results {
                    assert_eq!(m.org_id, org, "grpc search: {m:?}");
                    assert!(m.content.starts_with(&format!("{org}|")));
                }
            }
            // another org's memory by id: not found, as if it did not exist
            6 => {
                let o = rng.random_range(0..tenants.len());
                let Some(id) = tenants[o].written.keys().next().cloned() else {
                    continue;
                };
                let api = Api::new(&workers[w], Some(&tenants[t].reader));
                let (s, m) = api.get(&format!("/api/v1/memories/{id}")).await;
                if o == t {
                    assert_eq!(s, 200, "{m}");
                    assert_eq!(m["org_id"], org.as_str());
                } else {
                    assert_eq!(s, 404, "org {} read org {}'s memory: {m}", t, o);
                }
                let got = grpc
                    .get_memory(req(&tenants[t].reader, pb::GetMemoryRequest { id }))
                    .await;
                if o == t {
                    assert_eq!(got.unwrap().into_inner().org_id, org);
                } else {
                    assert_eq!(got.unwrap_err().code(), Code::NotFound);
                }
            }
            // stats count the key's org only
            _ => {
                let api = Api::new(&workers[w], Some(&tenants[t].reader));
                let (s, stats) = api.get(&format!("/api/v1/agents/{agent}/stats")).await;
                let own = tenants[t]
                    .written
                    .values()
                    .filter(|(a, _)| a == agent)
                    .count();
                if own == 0 {
                    assert_eq!(s, 404, "no memory of this org: {stats}");
                } else {
                    assert_eq!(s, 200, "{stats}");
                    assert_eq!(
                        stats["memory_count"].as_u64(),
                        Some(own as u64),
                        "stats count exactly the org's own memories: {stats}"
                    );
                }
            }
        }
    }

    // every acknowledged write reads back in its own org, once; nothing else
    for t in &tenants {
        let api = Api::new(&workers[0], Some(&t.reader));
        let mut seen = Vec::new();
        for agent in AGENTS {
            let (s, list) = api
                .get(&format!("/api/v1/memories?agent_id={agent}&limit=1000"))
                .await;
            assert_eq!(s, 200, "{list}");
            seen.extend(only_own("final list", &list["memories"], &t.org));
        }
        let distinct: BTreeSet<&String> = seen.iter().collect();
        assert_eq!(distinct.len(), seen.len(), "an id seen twice");
        let written: BTreeSet<&String> = t.written.keys().collect();
        assert_eq!(
            distinct, written,
            "org {} reads back exactly its writes",
            t.org
        );
    }

    // a deleted org's keys stay refused after an org of the same name is
    // created again
    let org = c.org("phoenix").await.unwrap();
    let (old_key, _) = c.key(&org, "read,write").await.unwrap();
    c.ctl.json(&["org", "delete", &org]).await.unwrap();
    let again = c.org("phoenix").await.unwrap();
    assert_ne!(again, org, "a new org, a new id");
    let (new_key, _) = c.key(&again, "read").await.unwrap();
    let revision = c.set_config("arc.write_batch_size", "100").await.unwrap();
    c.wait_applied(revision).await.unwrap();
    for worker in &workers {
        let (s, _) = Api::new(worker, Some(&old_key)).get("/api/v1/agents").await;
        assert_eq!(s, 401, "the deleted org's key");
        let (s, b) = Api::new(worker, Some(&new_key)).get("/api/v1/agents").await;
        assert_ne!(s, 401, "the new org's key works: {b}");
    }
}
