//! etcd is not trusted: someone who can write to it, but does not hold the
//! fleet key, gains nothing against a running `memtrace-worker`. Against a
//! real etcd, control plane and worker: an API key's published record
//! rewritten to name another org, and a tenant's route rewritten to point
//! at another Arc, are refused (counted on `/metrics`); the key keeps
//! serving its own org and the tenant's writes keep reaching its own Arc
//! with its token, none reaching the other host.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_common::bus::Op;
use memtrace_common::state::StateKeys;
use memtrace_proto::state::v1 as state;
use memtrace_tests::api::Api;
use memtrace_tests::arc::{ArcStandIn, CostModel};
use memtrace_tests::cluster::{Cluster, arc_with_token, eventually};
use memtrace_tests::grpc::{get_text, metric};
use memtrace_tests::watchers::etcd_bus;
use prost::Message;
use serde_json::json;
use std::time::Duration;

const PREFIX: &str = "/memtrace-trust/v1/";
const ARC_TOKEN: &str = "arc-trust-test-token-0123456789";
const DB: &str = "trusttest";

/// The record inside a stored value (`0xA1 | n | key id | tag | record`),
/// as an attacker reading etcd would take it apart.
fn inner(value: &[u8]) -> &[u8] {
    assert_eq!(value[0], 0xA1, "a signed record");
    let id_len = usize::from(value[1]);
    &value[2 + id_len + 32..]
}

/// The stored value with its record replaced and the original tag kept.
fn with_record(value: &[u8], record: &[u8]) -> Vec<u8> {
    let head = value.len() - inner(value).len();
    let mut out = value[..head].to_vec();
    out.extend_from_slice(record);
    out
}

async fn unauthenticated_total(url: &str) -> u64 {
    let text = get_text(url, "/metrics").await;
    metric(&text, "memtrace_snapshot_unauthenticated_records_total").unwrap_or(0.0) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_records_in_etcd_grant_nothing() {
    let c = Cluster::start(PREFIX).await.unwrap();
    // instant answers: behaviour, not time
    let arc = arc_with_token(ARC_TOKEN, DB).await.unwrap();
    let evil = ArcStandIn::builder()
        .cost_model(CostModel::instant())
        .start()
        .await
        .unwrap();
    let victim = c.org("victim").await.unwrap();
    let other = c.org("other").await.unwrap();
    c.add_arc(&victim, &arc.url(), DB, Some(ARC_TOKEN))
        .await
        .unwrap();
    let (key, key_id) = c.key(&victim, "read,write").await.unwrap();
    let worker = c.worker("trust-1", &[]).await.unwrap();
    let api = Api::new(&worker, Some(&key));
    let (s, m) = api
        .post(
            "/api/v1/memories",
            json!({"agent_id": "a", "content": "before"}),
        )
        .await;
    assert_eq!(s, 201, "{m}");

    // the attacker rewrites the key's record to name the other org, and the
    // victim's route to point at their own host
    let bus = etcd_bus(&c.etcd.endpoint()).await.unwrap();
    let keys = StateKeys::new(PREFIX);
    let stored = |key: String| {
        let bus = bus.clone();
        async move {
            let snapshot = bus.load(&key).await.unwrap();
            snapshot
                .kvs
                .into_iter()
                .find(|kv| kv.key == key)
                .unwrap()
                .value
        }
    };
    let key_value = stored(keys.api_key(&key_id)).await;
    let mut key_record = state::ApiKeyRecord::decode(inner(&key_value)).unwrap();
    key_record.org_id = other.clone();
    key_record.scopes.push("admin".into());
    let route_value = stored(keys.arc_route(&victim)).await;
    let mut route_record = state::ArcRouteRecord::decode(inner(&route_value)).unwrap();
    route_record.url = evil.url();
    let before = unauthenticated_total(&worker.url()).await;
    bus.apply(vec![
        Op::Put {
            key: keys.api_key(&key_id),
            value: with_record(&key_value, &key_record.encode_to_vec()),
        },
        Op::Put {
            key: keys.arc_route(&victim),
            // not even pretending: no tag at all
            value: route_record.encode_to_vec(),
        },
    ])
    .await
    .unwrap();
    eventually(
        "both forgeries refused",
        Duration::from_secs(10),
        async || (unauthenticated_total(&worker.url()).await >= before + 2).then_some(()),
    )
    .await
    .unwrap();

    // the key still works for its own org only, and writes still go to the
    // victim's Arc with its token
    let (s, m) = api
        .post(
            "/api/v1/memories",
            json!({"agent_id": "a", "content": "after"}),
        )
        .await;
    assert_eq!(s, 201, "{m}");
    assert_eq!(m["org_id"], victim.as_str(), "{m}");
    let (s, list) = api.get("/api/v1/memories?agent_id=a").await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(list["count"], 2, "{list}");
    assert_eq!(arc.row_count(DB, "events"), 2);
    assert_eq!(
        evil.stats().db(DB).write_requests,
        0,
        "nothing reached the other host"
    );
    assert!(
        evil.last_request().is_none(),
        "the other host never saw a request (nor the tenant's Arc token)"
    );
}
