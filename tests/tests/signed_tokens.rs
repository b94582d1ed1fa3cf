//! Agent tokens end to end, with real etcd, the real control plane, real
//! workers and the real `memtracectl`: a token minted by `memtracectl token
//! create` authenticates at a worker through the API key's headers (REST and
//! gRPC); a token bound to one agent writes and reads only as that agent;
//! tampered and foreign-key tokens get their own messages (API keys keep
//! theirs); and a token of a deleted org stays refused after an org of the
//! same name is created again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_common::signing::SigningKey;
use memtrace_common::token::{Claims, mint, new_token_id};
use memtrace_proto::v1 as pb;
use memtrace_tests::api::Api;
use memtrace_tests::cluster::{Cluster, arc_with_token};
use memtrace_tests::grpc::{channel, with_key};
use pb::memory_service_client::MemoryServiceClient;
use serde_json::{Value, json};

const ARC_TOKEN: &str = "arc-tokens-test-token-0123456789";
const DB: &str = "tokens";

async fn token(c: &Cluster, args: &[&str]) -> Value {
    let mut all = vec!["token", "create"];
    all.extend_from_slice(args);
    c.ctl.json(&all).await.unwrap()
}

/// A memory to write as `agent`.
fn memory(agent: &str, content: &str) -> Value {
    json!({"agent_id": agent, "content": content})
}

fn error(body: &Value) -> &str {
    body["error"].as_str().unwrap_or_else(|| panic!("{body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_bound_token_acts_only_as_its_agent() {
    let c = Cluster::start("/memtrace-tokens-agent/v1/").await.unwrap();
    let arc = arc_with_token(ARC_TOKEN, DB).await.unwrap();
    let org = c.org("orchestra").await.unwrap();
    c.add_arc(&org, &arc.url(), DB, Some(ARC_TOKEN))
        .await
        .unwrap();
    let (key, _) = c.key(&org, "read,write").await.unwrap();
    let worker = c.worker("tokens-1", &[]).await.unwrap();

    let minted = token(
        &c,
        &[
            "--org",
            &org,
            "--agent",
            "planner",
            "--scopes",
            "read,write",
            "--ttl",
            "1h",
        ],
    )
    .await;
    let planner = minted["token"].as_str().unwrap().to_owned();
    assert!(planner.starts_with("v4.public."), "{minted}");
    assert_eq!(minted["agent_id"], "planner");
    assert_eq!(minted["org_id"], org.as_str());
    assert!(minted["key_id"].as_str().unwrap().starts_with("tk_"));
    c.wait_in_sync(&worker).await.unwrap();

    let as_planner = Api::new(&worker, Some(&planner));
    let (s, body) = as_planner
        .post("/api/v1/memories", memory("planner", "plan the week"))
        .await;
    assert_eq!(s, 201, "the bound agent writes: {body}");
    let (s, body) = as_planner
        .post("/api/v1/memories", memory("critic", "not mine to write"))
        .await;
    assert_eq!(s, 403, "{body}");
    assert_eq!(
        error(&body),
        "this token is bound to agent \"planner\"; it cannot act as agent \"critic\""
    );
    // the org key writes as another agent; the bound token never reads it
    let (s, body) = Api::new(&worker, Some(&key))
        .post("/api/v1/memories", memory("critic", "the critic's note"))
        .await;
    assert_eq!(s, 201, "{body}");
    let critics_id = body["id"].as_str().unwrap().to_owned();
    let (s, body) = as_planner.get("/api/v1/memories?agent_id=critic").await;
    assert_eq!(s, 403, "a filter on another agent: {body}");
    // once the org key reads the critic's memory, the bound token is refused it
    let by_id = format!("/api/v1/memories/{critics_id}");
    let mut visible = false;
    for _ in 0..100 {
        if Api::new(&worker, Some(&key)).get(&by_id).await.0 == 200 {
            visible = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(visible, "the critic's memory never became readable");
    let (s, body) = as_planner.get(&by_id).await;
    assert_eq!(
        (s, error(&body)),
        (
            403,
            "this token is bound to agent \"planner\"; it cannot act as agent \"critic\""
        )
    );
    let (s, body) = as_planner.get(&format!("{by_id}/history")).await;
    assert_eq!(s, 403, "its history: {body}");
    let (s, body) = as_planner.get("/api/v1/memories?limit=100").await;
    assert_eq!(s, 200, "{body}");
    for m in body["memories"].as_array().unwrap() {
        assert_eq!(m["agent_id"], "planner", "narrowed to its agent: {m}");
    }
    for path in [
        "/api/v1/agents",
        "/api/v1/sessions",
        "/api/v1/erasures",
        "/api/v1/erasures/receipts",
    ] {
        let (s, body) = as_planner.get(path).await;
        assert_eq!(s, 403, "{path} spans agents: {body}");
        assert!(
            error(&body).contains("bound to agent \"planner\""),
            "{body}"
        );
    }
    let (s, body) = as_planner
        .post("/api/v1/delete", json!({"agent_id": "planner"}))
        .await;
    assert_eq!(s, 403, "deletes: {body}");

    // gRPC: the same rule, the same header
    let mut grpc = MemoryServiceClient::new(channel(&worker.url()).await);
    let refused = grpc
        .create_memory(with_key(
            Some(&planner),
            pb::CreateMemoryRequest {
                memory: Some(pb::MemoryInput {
                    agent_id: "critic".into(),
                    content: "over gRPC".into(),
                    ..pb::MemoryInput::default()
                }),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("bound to agent \"planner\""));

    // an unbound token of the org may act as any agent
    let any = token(&c, &["--org", &org, "--scopes", "write"]).await;
    let (s, body) = Api::new(&worker, Some(any["token"].as_str().unwrap()))
        .post(
            "/api/v1/memories",
            memory("critic", "an orchestrator's write"),
        )
        .await;
    assert_eq!(s, 201, "{body}");

    // tampered, and signed by a key the control plane never published
    let mut tampered = planner.clone().into_bytes();
    let i = "v4.public.".len() + 20;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let (s, body) = Api::new(&worker, Some(&tampered))
        .get("/api/v1/memories")
        .await;
    assert_eq!((s, error(&body)), (401, "token signature invalid"));
    let now = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).unwrap();
    let forged = mint(
        &SigningKey::generate("tk_99"),
        &Claims {
            org: org.clone(),
            agent: None,
            scopes: vec!["admin".into()],
            iat: now,
            exp: now + jiff::SignedDuration::from_secs(600),
            jti: new_token_id(),
        },
    )
    .unwrap();
    let (s, body) = Api::new(&worker, Some(&forged))
        .get("/api/v1/memories")
        .await;
    assert_eq!(
        (s, error(&body)),
        (401, "token signed by an unknown key \"tk_99\"")
    );
    // API keys keep their message
    let (s, body) = Api::new(&worker, Some("mtk_not_a_key"))
        .get("/api/v1/memories")
        .await;
    assert_eq!((s, error(&body)), (401, "invalid API key"));

    // the lifetime is bounded by tokens.max_ttl_seconds
    let out = c
        .ctl
        .run(&["token", "create", "--org", &org, "--ttl", "30d"])
        .await
        .unwrap();
    assert!(!out.success, "{out:?}");
    assert!(
        out.stderr.contains("tokens.max_ttl_seconds"),
        "{}",
        out.stderr
    );
    // an agent-bound token cannot carry admin
    let out = c
        .ctl
        .run(&[
            "token", "create", "--org", &org, "--agent", "a", "--scopes", "admin",
        ])
        .await
        .unwrap();
    assert!(
        !out.success && out.stderr.contains("admin"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_orgs_token_stays_refused_after_its_name_is_reused() {
    let c = Cluster::start("/memtrace-tokens-deleted/v1/")
        .await
        .unwrap();
    let worker = c.worker("tokens-2", &[]).await.unwrap();
    let org = c.org("phoenix").await.unwrap();
    let old = token(&c, &["--org", &org, "--scopes", "read"]).await;
    let old = old["token"].as_str().unwrap().to_owned();
    c.wait_in_sync(&worker).await.unwrap();
    let (s, body) = Api::new(&worker, Some(&old)).get("/api/v1/memories").await;
    assert_ne!(s, 401, "the live org's token authenticates: {body}");

    c.ctl.json(&["org", "delete", &org]).await.unwrap();
    let again = c.org("phoenix").await.unwrap();
    assert_ne!(again, org, "a new org, a new id");
    let new = token(&c, &["--org", &again, "--scopes", "read"]).await;
    let new = new["token"].as_str().unwrap().to_owned();
    let revision = c.set_config("arc.write_batch_size", "100").await.unwrap();
    c.wait_applied(revision).await.unwrap();
    let (s, body) = Api::new(&worker, Some(&old)).get("/api/v1/memories").await;
    assert_eq!(
        (s, error(&body)),
        (401, "the org of this token was deleted"),
        "the deleted org's token"
    );
    let (s, body) = Api::new(&worker, Some(&new)).get("/api/v1/memories").await;
    assert_ne!(s, 401, "the new org's token works: {body}");
    // and no token is minted for the deleted org's id
    let out = c
        .ctl
        .run(&["token", "create", "--org", &org])
        .await
        .unwrap();
    assert!(!out.success, "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orchestrator_mints_narrow_tokens_at_a_worker() {
    let c = Cluster::start("/memtrace-tokens-mint/v1/").await.unwrap();
    let arc = arc_with_token(ARC_TOKEN, DB).await.unwrap();
    let org = c.org("mint").await.unwrap();
    c.add_arc(&org, &arc.url(), DB, Some(ARC_TOKEN))
        .await
        .unwrap();
    let (admin, _) = c.key(&org, "admin").await.unwrap();
    let (writer, _) = c.key(&org, "read,write").await.unwrap();
    let minting = c.worker("tokens-mint-1", &[]).await.unwrap();
    let other = c.worker("tokens-mint-2", &[]).await.unwrap();
    c.wait_in_sync(&minting).await.unwrap();
    c.wait_in_sync(&other).await.unwrap();

    let ask = json!({"agent_id": "planner", "scopes": ["write", "read"], "ttl_seconds": 600});
    let (s, body) = Api::new(&minting, Some(&writer))
        .post("/api/v1/tokens", ask.clone())
        .await;
    assert_eq!(s, 403, "a key without admin: {body}");
    let (s, minted) = Api::new(&minting, Some(&admin))
        .post("/api/v1/tokens", ask.clone())
        .await;
    assert_eq!(s, 201, "{minted}");
    assert_eq!(minted["org_id"], org.as_str(), "the caller's org");
    assert_eq!(minted["agent_id"], "planner");
    assert!(
        minted["key_id"].as_str().unwrap().starts_with("wk_"),
        "{minted}"
    );
    let planner = minted["token"].as_str().unwrap().to_owned();

    // verified by every worker, bound to its agent
    for worker in [&minting, &other] {
        let api = Api::new(worker, Some(&planner));
        let (s, body) = api
            .post("/api/v1/memories", memory("planner", "minted at a worker"))
            .await;
        assert_eq!(s, 201, "{body}");
        let (s, body) = api
            .post("/api/v1/memories", memory("critic", "not mine"))
            .await;
        assert_eq!(s, 403, "{body}");
    }
    // a token cannot mint; limits are the control plane's
    let (s, body) = Api::new(&minting, Some(&planner))
        .post("/api/v1/tokens", json!({}))
        .await;
    assert_eq!(
        (s, error(&body)),
        (
            403,
            "a token cannot mint tokens: use an org API key with the admin scope"
        )
    );
    let (s, body) = Api::new(&minting, Some(&admin))
        .post("/api/v1/tokens", json!({"ttl_seconds": 90 * 86_400}))
        .await;
    assert_eq!(s, 400, "{body}");
    assert!(error(&body).contains("tokens.max_ttl_seconds"), "{body}");
    let (s, body) = Api::new(&minting, Some(&admin))
        .post(
            "/api/v1/tokens",
            json!({"agent_id": "a", "scopes": ["admin"]}),
        )
        .await;
    assert_eq!(s, 400, "{body}");
    let (s, body) = Api::new(&minting, Some(&admin))
        .post("/api/v1/tokens", json!({"org_id": "org_other"}))
        .await;
    assert_eq!(s, 400, "the org is never chosen: {body}");

    // the gRPC equivalent
    let mut agents = pb::agent_service_client::AgentServiceClient::new(channel(&other.url()).await);
    let minted = agents
        .create_agent_token(with_key(
            Some(&admin),
            pb::CreateAgentTokenRequest {
                agent_id: "critic".into(),
                scopes: vec!["read".into()],
                ttl_seconds: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(minted.agent_id, "critic");
    assert_eq!(minted.scopes, ["read"]);
    let (s, body) = Api::new(&minting, Some(&minted.token))
        .post("/api/v1/memories", memory("critic", "read-only"))
        .await;
    assert_eq!(
        (s, error(&body)),
        (403, "this token lacks the Write scope"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_key_signs_and_the_retired_one_still_verifies() {
    let c = Cluster::start("/memtrace-tokens-rotate/v1/").await.unwrap();
    let worker = c.worker("tokens-rotate", &[]).await.unwrap();
    let org = c.org("rotating").await.unwrap();
    let keys = c.ctl.json(&["token", "keys"]).await.unwrap();
    let ids: Vec<&str> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key_id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"tk_1"), "{keys}");
    assert!(ids.iter().any(|id| id.starts_with("wk_")), "{keys}");
    let before = token(&c, &["--org", &org, "--scopes", "read"]).await;
    assert_eq!(before["key_id"], "tk_1");

    let rotated = c.ctl.json(&["token", "rotate-key"]).await.unwrap();
    assert_eq!(rotated["key_id"], "tk_2", "{rotated}");
    let after = token(&c, &["--org", &org, "--scopes", "read"]).await;
    assert_eq!(after["key_id"], "tk_2");
    c.wait_in_sync(&worker).await.unwrap();
    for minted in [&before, &after] {
        let (s, body) = Api::new(&worker, minted["token"].as_str())
            .get("/api/v1/memories")
            .await;
        assert_ne!(s, 401, "{} still verifies: {body}", minted["key_id"]);
    }
    let keys = c.ctl.json(&["token", "keys"]).await.unwrap();
    let tk1 = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key_id"] == "tk_1")
        .unwrap();
    assert!(tk1["retired_at"].is_string(), "tk_1 retired: {keys}");
}

/// The real worker under libfaketime, its wall clock `offset_secs` off.
async fn skewed_worker(c: &Cluster, id: &str, offset_secs: i64) -> memtrace_tests::worker::Worker {
    let env = memtrace_tests::faults::skew::skewed_clock_env(offset_secs).unwrap();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    c.worker(id, &env).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_and_issue_time_are_checked_on_the_workers_clock_with_leeway() {
    let c = Cluster::start("/memtrace-tokens-clock/v1/").await.unwrap();
    let org = c.org("clocks").await.unwrap();
    let ahead = skewed_worker(&c, "tokens-ahead", 2 * 3600).await;
    let behind = skewed_worker(&c, "tokens-behind", -300).await;
    let slightly = skewed_worker(&c, "tokens-slightly-behind", -10).await;
    let minted = token(&c, &["--org", &org, "--scopes", "read", "--ttl", "1h"]).await;
    let t = minted["token"].as_str().unwrap();
    let expires_at = minted["expires_at"].as_str().unwrap();
    for w in [&ahead, &behind, &slightly] {
        c.wait_in_sync(w).await.unwrap();
    }
    let (s, body) = Api::new(&ahead, Some(t)).get("/api/v1/memories").await;
    assert_eq!(s, 401, "{body}");
    let refused = error(&body);
    assert!(refused.starts_with("token expired at "), "{body}");
    let at: jiff::Timestamp = refused["token expired at ".len()..].parse().unwrap();
    assert_eq!(at, expires_at.parse::<jiff::Timestamp>().unwrap());
    let (s, body) = Api::new(&behind, Some(t)).get("/api/v1/memories").await;
    assert_eq!(s, 401, "{body}");
    assert!(
        error(&body).starts_with("token issued in the future"),
        "{body}"
    );
    let (s, body) = Api::new(&slightly, Some(t)).get("/api/v1/memories").await;
    assert_ne!(s, 401, "10 s behind is within the leeway: {body}");
}
