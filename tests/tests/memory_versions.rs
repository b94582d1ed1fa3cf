//! Updating memories and reading their history, on both stores: an org
//! bound to the Arc stand-in (instant answers: behaviour, not time) with
//! two `memtrace-worker` processes, and an org on a worker's embedded
//! store. An update answers the new version; every read of every worker
//! shows the newest version only — a filter matching only the old content
//! or tags finds nothing — and the history lists both, newest first. Bad
//! updates are 400s naming the field, unknown ids 404, read-only keys 403;
//! a deleted memory has no history.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_tests::api::{Api, error_of};
use memtrace_tests::cluster::{Cluster, arc_with_token};
use serde_json::{Value, json};

const ARC_TOKEN: &str = "arc-versions-test-token-0123456789";
const DB: &str = "versionstest";

fn contents(list: &Value, field: &str) -> Vec<String> {
    list[field]
        .as_array()
        .unwrap_or_else(|| panic!("{field} in {list}"))
        .iter()
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect()
}

/// Creates a memory through `writer`, updates it, and checks every read of
/// every api in `readers`.
async fn update_and_read(writer: &Api, readers: &[(&str, &Api)], reader_key_api: &Api) {
    let (s, created) = writer
        .post(
            "/api/v1/memories",
            json!({"agent_id": "agent_v", "content": "the alpha plan", "tags": ["alpha"],
                   "importance": 0.2, "event_type": "plan", "metadata": {"v": 1}}),
        )
        .await;
    assert_eq!(s, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();

    let (s, updated) = writer
        .call(
            "PATCH",
            &format!("/api/v1/memories/{id}"),
            Some(json!({"content": "the beta plan", "tags": ["beta"], "importance": 0.9})),
        )
        .await;
    assert_eq!(s, 200, "{updated}");
    assert_eq!(updated["id"], id.as_str());
    assert_eq!(updated["content"], "the beta plan");
    assert_eq!(updated["tags"], json!(["beta"]));
    assert_eq!(updated["importance"], 0.9);
    assert_eq!(updated["event_type"], "plan", "unchanged fields are kept");
    assert_eq!(
        updated["metadata"],
        json!({"v": 1}),
        "unchanged fields are kept"
    );
    assert!(
        updated["time"].as_str().unwrap() > created["time"].as_str().unwrap(),
        "{updated} after {created}"
    );

    for (who, api) in readers {
        let (s, got) = api.get(&format!("/api/v1/memories/{id}")).await;
        assert_eq!(s, 200, "{who}: {got}");
        assert_eq!(got["content"], "the beta plan", "{who}");
        let (s, list) = api.get("/api/v1/memories?agent_id=agent_v").await;
        assert_eq!(s, 200, "{who}: {list}");
        assert_eq!(contents(&list, "memories"), ["the beta plan"], "{who}");
        let (s, asc) = api.get("/api/v1/memories?agent_id=agent_v&order=asc").await;
        assert_eq!(s, 200, "{who}: {asc}");
        assert_eq!(contents(&asc, "memories"), ["the beta plan"], "{who}");
        for (filter, want) in [
            (json!({"content_contains": "alpha"}), 0),
            (json!({"tags": ["alpha"]}), 0),
            (json!({"content_contains": "beta"}), 1),
            (json!({"tags": ["beta"]}), 1),
        ] {
            let mut body = filter.clone();
            body["agent_id"] = json!("agent_v");
            let (s, found) = api.post("/api/v1/search", body).await;
            assert_eq!(s, 200, "{who}: {found}");
            assert_eq!(found["count"], want, "{who} {filter}: {found}");
        }
        let (s, history) = api.get(&format!("/api/v1/memories/{id}/history")).await;
        assert_eq!(s, 200, "{who}: {history}");
        assert_eq!(history["count"], 2, "{who}: {history}");
        assert_eq!(
            contents(&history, "versions"),
            ["the beta plan", "the alpha plan"],
            "{who}: newest first"
        );
        assert_eq!(history["versions"][1]["tags"], json!(["alpha"]));
    }

    // bad updates change nothing and say why
    for (body, says) in [
        (json!({}), "nothing to update"),
        (json!({"importance": 2}), "importance"),
        (json!({"agent_id": "other"}), "agent_id"),
        (json!({"tags": ["bad tag"]}), "tags"),
    ] {
        let (s, refused) = writer
            .call(
                "PATCH",
                &format!("/api/v1/memories/{id}"),
                Some(body.clone()),
            )
            .await;
        assert_eq!(s, 400, "{body}: {refused}");
        assert!(error_of(&refused).contains(says), "{body}: {refused}");
    }
    let (s, refused) = writer
        .call(
            "PATCH",
            "/api/v1/memories/0190a8e2-7c3b-7d4e-8f00-000000000000",
            Some(json!({"content": "x"})),
        )
        .await;
    assert_eq!(s, 404, "{refused}");
    let (s, refused) = reader_key_api
        .call(
            "PATCH",
            &format!("/api/v1/memories/{id}"),
            Some(json!({"content": "x"})),
        )
        .await;
    assert_eq!(s, 403, "{refused}");

    // a deleted memory has no history
    let (s, deleted) = writer
        .call("DELETE", &format!("/api/v1/memories/{id}"), None)
        .await;
    assert_eq!(s, 202, "{deleted}");
    for (who, api) in readers {
        let (s, history) = api.get(&format!("/api/v1/memories/{id}/history")).await;
        assert_eq!(s, 404, "{who}: {history}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_on_arc_show_the_newest_version_everywhere_and_keep_history() {
    let c = Cluster::start_with_env(
        "/memtrace-versions/v1/",
        &[("MEMTRACE_CONTROL_PLANE_ERASURE_RECHECK_DELAY_MS", "300")],
    )
    .await
    .unwrap();
    let arc = arc_with_token(ARC_TOKEN, DB).await.unwrap();
    let org = c.org("versions-arc").await.unwrap();
    c.add_arc(&org, &arc.url(), DB, Some(ARC_TOKEN))
        .await
        .unwrap();
    let (key, _) = c.key(&org, "read,write").await.unwrap();
    let (reader, _) = c.key(&org, "read").await.unwrap();
    let w1 = c.worker("versions-1", &[]).await.unwrap();
    let w2 = c.worker("versions-2", &[]).await.unwrap();
    let (one, two) = (Api::new(&w1, Some(&key)), Api::new(&w2, Some(&key)));
    update_and_read(
        &one,
        &[("worker 1", &one), ("worker 2", &two)],
        &Api::new(&w2, Some(&reader)),
    )
    .await;
    // the delete reaches the data: the memory's rows and its superseded
    // version are erased from the stand-in by the control plane
    memtrace_tests::cluster::eventually(
        "the deleted memory erased with its history",
        std::time::Duration::from_secs(30),
        async || {
            let left = (
                arc.row_count(DB, "events"),
                arc.row_count(DB, "memory_versions"),
            );
            (left == (0, 0))
                .then_some(())
                .ok_or(format!("rows left: {left:?}"))
        },
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_on_the_embedded_store_show_the_newest_version_and_keep_history() {
    let c = Cluster::start("/memtrace-versions-embedded/v1/")
        .await
        .unwrap();
    let org = c.org("versions-embedded").await.unwrap();
    let (key, _) = c.key(&org, "read,write").await.unwrap();
    let (reader, _) = c.key(&org, "read").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let worker = c
        .worker(
            "versions-embedded",
            &[("MEMTRACE_WORKER_EMBEDDED_DIR", dir.path().to_str().unwrap())],
        )
        .await
        .unwrap();
    let api = Api::new(&worker, Some(&key));
    update_and_read(
        &api,
        &[("embedded", &api)],
        &Api::new(&worker, Some(&reader)),
    )
    .await;
}

/// The same over gRPC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_updates_and_history() {
    use memtrace_proto::v1 as pb;
    use memtrace_tests::grpc::{channel, with_key};
    use pb::memory_service_client::MemoryServiceClient;

    let c = Cluster::start("/memtrace-versions-grpc/v1/").await.unwrap();
    let arc = arc_with_token(ARC_TOKEN, DB).await.unwrap();
    let org = c.org("versions-grpc").await.unwrap();
    c.add_arc(&org, &arc.url(), DB, Some(ARC_TOKEN))
        .await
        .unwrap();
    let (key, _) = c.key(&org, "read,write").await.unwrap();
    let worker = c.worker("versions-grpc", &[]).await.unwrap();
    let rest = Api::new(&worker, Some(&key));
    let mut grpc = MemoryServiceClient::new(channel(&worker.url()).await);
    let (s, created) = rest
        .post(
            "/api/v1/memories",
            json!({"agent_id": "agent_g", "content": "first", "tags": ["t1"]}),
        )
        .await;
    assert_eq!(s, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let updated = grpc
        .update_memory(with_key(
            Some(&key),
            pb::UpdateMemoryRequest {
                id: id.clone(),
                content: Some("second".into()),
                replace_tags: true,
                tags: vec![],
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (updated.id.as_str(), updated.content.as_str()),
        (id.as_str(), "second")
    );
    assert!(
        updated.tags.is_empty(),
        "replace_tags with no tags clears them"
    );
    let history = grpc
        .get_memory_history(with_key(
            Some(&key),
            pb::GetMemoryRequest { id: id.clone() },
        ))
        .await
        .unwrap()
        .into_inner();
    let got: Vec<&str> = history
        .versions
        .iter()
        .map(|m| m.content.as_str())
        .collect();
    assert_eq!(got, ["second", "first"]);
    let empty = grpc
        .update_memory(with_key(
            Some(&key),
            pb::UpdateMemoryRequest {
                id: id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(empty.code(), tonic::Code::InvalidArgument, "{empty:?}");
    let bad_json = grpc
        .update_memory(with_key(
            Some(&key),
            pb::UpdateMemoryRequest {
                id,
                metadata_json: Some("{not json".into()),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        bad_json.code(),
        tonic::Code::InvalidArgument,
        "{bad_json:?}"
    );
    assert!(bad_json.message().contains("metadata_json"), "{bad_json:?}");
}
