//! Tenants fetch their erasure receipts through the data API: when a
//! delete's erasure job finishes, the control plane delivers the signed
//! receipt into the org's own store (Arc stand-in, or the embedded file),
//! and the org's workers serve it (`GET /api/v1/erasures/{id}/receipt`,
//! `GET /api/v1/erasures/receipts`, gRPC `ListErasureReceipts`) to the
//! tenant's own key. The receipt verifies offline with `memtracectl erasure
//! verify` — also against the control plane's public keys, which workers
//! serve from the state bus (`GET /api/v1/erasures/keys`) — and fails when
//! edited. Bad ids are 400s naming the field, an
//! unknown one is 404. Deleting the org erases its receipts too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_tests::api::{Api, error_of};
use memtrace_tests::cli::memtracectl;
use memtrace_tests::cluster::{Cluster, arc_with_token, eventually};
use serde_json::{Value, json};
use std::time::Duration;

const ARC_TOKEN: &str = "arc-receipts-test-token-0123456789";
const DB: &str = "receiptstest";
const FAST: &[(&str, &str)] = &[("MEMTRACE_CONTROL_PLANE_ERASURE_RECHECK_DELAY_MS", "300")];

/// Deletes one of two new memories; the erasure id.
async fn delete_one(api: &Api) -> String {
    let mut ids = Vec::new();
    for content in ["keep me", "forget me"] {
        let (s, m) = api
            .post(
                "/api/v1/memories",
                json!({"agent_id": "a1", "content": content}),
            )
            .await;
        assert_eq!(s, 201, "{m}");
        ids.push(m["id"].as_str().unwrap().to_owned());
    }
    let (s, deleted) = api
        .call("DELETE", &format!("/api/v1/memories/{}", ids[1]), None)
        .await;
    assert_eq!(s, 202, "{deleted}");
    deleted["erasure"]["id"].as_str().unwrap().to_owned()
}

/// Waits for the erasure's receipt through the data API, checks it
/// verifies offline and fails edited; the receipt.
async fn fetch_and_verify(api: &Api, erasure: &str) -> Value {
    let path = format!("/api/v1/erasures/{erasure}/receipt");
    let receipt = eventually(
        "the receipt through the data API",
        Duration::from_secs(40),
        async || {
            let (s, body) = api.get(&path).await;
            (s == 200)
                .then_some(body.clone())
                .ok_or(format!("{s} {body}"))
        },
    )
    .await
    .unwrap();
    assert_eq!(receipt["receipt"]["erasure_id"], erasure, "{receipt}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("receipt.json");
    std::fs::write(&file, receipt.to_string()).unwrap();
    let file = file.to_str().unwrap();
    let ok = memtracectl(&["erasure", "verify", file], &[])
        .await
        .unwrap();
    assert_eq!(ok.code, Some(0), "{ok:?}");
    // against the control plane's keys, as the workers publish them
    let (s, keys) = api.get("/api/v1/erasures/keys").await;
    assert_eq!(s, 200, "{keys}");
    assert_eq!(
        keys["keys"][0]["key_id"], receipt["signature"]["key_id"],
        "{keys}"
    );
    let keys_file = dir.path().join("keys.json");
    std::fs::write(&keys_file, keys.to_string()).unwrap();
    let keys_path = keys_file.to_str().unwrap();
    let trusted = memtracectl(&["erasure", "verify", file, "--keys", keys_path], &[])
        .await
        .unwrap();
    assert_eq!(trusted.code, Some(0), "{trusted:?}");
    let mut other = keys.clone();
    other["keys"][0]["public_key"] = json!("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    std::fs::write(&keys_file, other.to_string()).unwrap();
    let untrusted = memtracectl(&["erasure", "verify", file, "--keys", keys_path], &[])
        .await
        .unwrap();
    assert_ne!(
        untrusted.code,
        Some(0),
        "a key not in the set: {untrusted:?}"
    );
    let mut edited = receipt.clone();
    edited["receipt"]["requested_by"] = json!("someone else");
    std::fs::write(file, edited.to_string()).unwrap();
    let refused = memtracectl(&["erasure", "verify", file], &[])
        .await
        .unwrap();
    assert_ne!(
        refused.code,
        Some(0),
        "an edited receipt fails: {refused:?}"
    );

    let (s, list) = api.get("/api/v1/erasures/receipts?limit=10").await;
    assert_eq!(s, 200, "{list}");
    assert!(
        list["receipts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["erasure_id"] == erasure && r["receipt"] == receipt),
        "{list}"
    );
    for (path, field) in [
        ("/api/v1/erasures/not-an-id/receipt", "erasure_id"),
        ("/api/v1/erasures/receipts?limit=101", "limit"),
        ("/api/v1/erasures/receipts?erasure_id=x'y", "erasure_id"),
    ] {
        let (s, e) = api.get(path).await;
        assert_eq!(s, 400, "{path}: {e}");
        assert!(error_of(&e).contains(field), "{path}: {e}");
    }
    let (s, e) = api.get("/api/v1/erasures/era_0000000000/receipt").await;
    assert_eq!(s, 404, "{e}");
    receipt
}

/// How many receipts of `org` the stand-in holds.
async fn org_receipts(arc: &memtrace_tests::arc::ArcStandIn, org: &str) -> usize {
    arc.rows(DB, "erasure_receipts")
        .await
        .map(|rows| rows.iter().filter(|r| r["org_id"] == org).count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_reach_the_tenant_through_rest_and_grpc_on_arc() {
    use memtrace_proto::v1 as pb;
    use memtrace_tests::grpc::{channel, with_key};
    use pb::memory_service_client::MemoryServiceClient;

    let c = Cluster::start_with_env("/memtrace-receipts/v1/", FAST)
        .await
        .unwrap();
    let arc = arc_with_token(ARC_TOKEN, DB).await.unwrap();
    let org = c.org("receipts").await.unwrap();
    c.add_arc(&org, &arc.url(), DB, Some(ARC_TOKEN))
        .await
        .unwrap();
    let (key, _) = c.key(&org, "read,write").await.unwrap();
    let (reader, _) = c.key(&org, "read").await.unwrap();
    let worker = c.worker("receipts", &[]).await.unwrap();
    let erasure = delete_one(&Api::new(&worker, Some(&key))).await;
    // a read-only key reads receipts
    let receipt = fetch_and_verify(&Api::new(&worker, Some(&reader)), &erasure).await;

    let mut grpc = MemoryServiceClient::new(channel(&worker.url()).await);
    let listed = grpc
        .list_erasure_receipts(with_key(
            Some(&reader),
            pb::ListErasureReceiptsRequest {
                erasure_id: erasure.clone(),
                limit: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.receipts.len(), 1, "{listed:?}");
    let got: Value = serde_json::from_str(&listed.receipts[0].receipt_json).unwrap();
    assert_eq!(got, receipt);
    assert!(listed.receipts[0].delivered_at_unix_micros > 0);
    let (_, keys) = Api::new(&worker, Some(&reader))
        .get("/api/v1/erasures/keys")
        .await;
    let grpc_keys: Value = serde_json::from_str(&listed.key_set_json).unwrap();
    assert_eq!(grpc_keys, keys, "the same key set over gRPC");
    let bad = grpc
        .list_erasure_receipts(with_key(
            Some(&reader),
            pb::ListErasureReceiptsRequest {
                erasure_id: "nope".into(),
                limit: 0,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");

    // the org's deletion erases its receipts with everything else
    assert_eq!(org_receipts(&arc, &org).await, 1);
    c.ctl.json(&["org", "delete", &org]).await.unwrap();
    eventually(
        "the org's receipts erased",
        Duration::from_secs(40),
        async || {
            let n = org_receipts(&arc, &org).await;
            (n == 0).then_some(()).ok_or(format!("{n} receipts left"))
        },
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_reach_the_tenant_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_owned();
    let mut env = FAST.to_vec();
    env.push(("MEMTRACE_WORKER_EMBEDDED_DIR", &path));
    let c = Cluster::start_with_env("/memtrace-receipts-embedded/v1/", &env)
        .await
        .unwrap();
    let org = c.org("receipts-embedded").await.unwrap();
    let (key, _) = c.key(&org, "read,write").await.unwrap();
    let worker = c
        .worker(
            "receipts-embedded",
            &[("MEMTRACE_WORKER_EMBEDDED_DIR", &path)],
        )
        .await
        .unwrap();
    let api = Api::new(&worker, Some(&key));
    let erasure = delete_one(&api).await;
    fetch_and_verify(&api, &erasure).await;
}
