//! Erasure jobs end to end: a real etcd, the real control plane and the Arc
//! stand-in. An ErasureRecord put on the bus as a worker would (signed
//! with the fleet key, state REQUESTED) is adopted, its rows are deleted
//! from the org's Arc (and only the org's), the deletion is verified, the
//! record is removed and `memtracectl erasure show` reports the job done
//! with its receipt; a record not signed with the fleet key is never
//! adopted; deleting an org erases its memories, agents and sessions; a
//! control plane killed in the middle of a job resumes it after a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_common::bus::etcd::{EtcdBus, EtcdOptions};
use memtrace_common::bus::{Op, StateBus};
use memtrace_common::fleet::FleetKey;
use memtrace_common::state::{StateKeys, sign_record};
use memtrace_proto::state::v1::{
    ErasureMemoryIds, ErasureRecord, ErasureScope, ErasureState, erasure_scope,
};
use memtrace_tests::arc::ArcStandIn;
use memtrace_tests::arc::client::{RawArcClient, msgpack};
use memtrace_tests::cluster::{Cluster, arc_with_token, eventually};
use prost::Message;
use serde_json::{Value, json};
use std::time::Duration;

const TOKEN: &str = "arc-erasure-token";
const DATABASE: &str = "acme";
/// `org add-arc` without `--measurement`.
const MEASUREMENT: &str = "events";

/// Control-plane settings that keep the test short.
const FAST: &[(&str, &str)] = &[
    ("MEMTRACE_CONTROL_PLANE_ERASURE_RECHECK_DELAY_MS", "500"),
    ("MEMTRACE_CONTROL_PLANE_ERASURE_CLAIM_TTL_MS", "2000"),
];

async fn bus(cluster: &Cluster) -> EtcdBus {
    EtcdBus::connect(&[cluster.etcd.endpoint()], EtcdOptions::default())
        .await
        .unwrap()
}

fn fleet_key(cluster: &Cluster) -> FleetKey {
    let key = memtrace_common::keys::parse_key("fleet", Some(&cluster.fleet_key)).unwrap();
    FleetKey::new(&key)
}

/// Writes rows (`org_id`, `id`, ...) into `table` of the stand-in.
async fn write(arc: &ArcStandIn, table: &str, org: &str, ids: &[&str], id_column: &str) {
    let base: i64 = 1_767_225_600_000_000;
    let n = ids.len();
    let mut columns = serde_json::Map::new();
    columns.insert(
        "time".into(),
        json!((0..n).map(|i| base + i as i64).collect::<Vec<_>>()),
    );
    columns.insert("org_id".into(), json!(vec![org; n]));
    columns.insert(id_column.into(), json!(ids));
    columns.insert("content".into(), json!(vec!["secret memory"; n]));
    let body = json!({"m": table, "columns": columns});
    let client =
        RawArcClient::new(arc.url()).with_auth("authorization", &format!("Bearer {TOKEN}"));
    let (status, text) = client.write(Some(DATABASE), msgpack(&body)).await.unwrap();
    assert_eq!(status, 204, "write: {text}");
}

/// `id_column` values of `org`'s rows in `table` (empty when the table is gone).
async fn ids(arc: &ArcStandIn, table: &str, org: &str, id_column: &str) -> Vec<String> {
    let Ok(rows) = arc.rows(DATABASE, table).await else {
        return Vec::new();
    };
    let mut ids: Vec<String> = rows
        .iter()
        .filter(|r| r["org_id"] == org)
        .map(|r| r[id_column].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

fn erasure_id(n: u8) -> String {
    format!("era_{:026x}", 0x0123_4567_89ab_cdef_u128 + u128::from(n))
}

/// An erasure of memories `ids` of `org`, as a worker requests it.
fn request(org: &str, id: &str, ids: &[&str]) -> ErasureRecord {
    let quoted: Vec<String> = ids.iter().map(|i| format!("'{i}'")).collect();
    ErasureRecord {
        schema: 1,
        erasure_id: id.to_owned(),
        org_id: org.to_owned(),
        scope: Some(ErasureScope {
            kind: Some(erasure_scope::Kind::MemoryIds(ErasureMemoryIds {
                ids: ids.iter().map(|s| (*s).to_owned()).collect(),
            })),
        }),
        as_of_micros: 1_767_225_700_000_000,
        requested_by: "api_key:key_0123456789abcdef".into(),
        requested_at_micros: 1_767_225_700_000_000,
        state: ErasureState::Requested as i32,
        detail: String::new(),
        memory_predicate: format!("id IN ({})", quoted.join(", ")),
        store: "arc".into(),
    }
}

async fn put_record(cluster: &Cluster, bus: &EtcdBus, key: &FleetKey, record: &ErasureRecord) {
    let keys = StateKeys::new(&cluster.prefix);
    let full = keys.erasure(&record.org_id, &record.erasure_id);
    let path = keys.relative(&full).unwrap().to_owned();
    let value = sign_record(key, &path, &record.encode_to_vec());
    bus.apply(vec![Op::Put { key: full, value }]).await.unwrap();
}

async fn on_bus(cluster: &Cluster, bus: &EtcdBus, org: &str, id: &str) -> bool {
    let key = StateKeys::new(&cluster.prefix).erasure(org, id);
    bus.load(&key)
        .await
        .unwrap()
        .kvs
        .iter()
        .any(|kv| kv.key == key)
}

async fn show(cluster: &Cluster, id: &str) -> Result<Value, String> {
    cluster
        .ctl
        .json(&["erasure", "show", id])
        .await
        .map_err(|e| format!("{e:#}"))
}

async fn wait_done(cluster: &Cluster, id: &str, within: Duration) -> Value {
    eventually(&format!("erasure {id} done"), within, async || {
        let job = show(cluster, id).await?;
        if job["state"] == "done" {
            Ok(job)
        } else {
            Err(job.to_string())
        }
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}\ncontrol plane log:\n{}",
            cluster.control_plane.logs()
        )
    })
}

async fn bound_org(cluster: &Cluster, arc: &ArcStandIn, name: &str) -> String {
    let org = cluster.org(name).await.unwrap();
    cluster
        .add_arc(&org, &arc.url(), DATABASE, Some(TOKEN))
        .await
        .unwrap();
    org
}

#[tokio::test(flavor = "multi_thread")]
async fn a_requested_erasure_is_adopted_erased_verified_and_removed_from_the_bus() {
    let cluster = Cluster::start_with_env("/erasure-a/", FAST).await.unwrap();
    let arc = arc_with_token(TOKEN, DATABASE).await.unwrap();
    let org = bound_org(&cluster, &arc, "tenant").await;
    let other = bound_org(&cluster, &arc, "neighbour").await;
    write(&arc, MEASUREMENT, &org, &["mem_a", "mem_b", "mem_c"], "id").await;
    // the same memory id in another org is not covered
    write(&arc, MEASUREMENT, &other, &["mem_a"], "id").await;

    let bus = bus(&cluster).await;
    let key = fleet_key(&cluster);
    let id = erasure_id(1);
    put_record(
        &cluster,
        &bus,
        &key,
        &request(&org, &id, &["mem_a", "mem_b"]),
    )
    .await;
    // a record not signed with the fleet key is refused, never adopted
    let forged_id = erasure_id(2);
    let forger = FleetKey::new(&[9; 32]);
    put_record(
        &cluster,
        &bus,
        &forger,
        &request(&org, &forged_id, &["mem_c"]),
    )
    .await;

    let job = wait_done(&cluster, &id, Duration::from_secs(30)).await;
    assert_eq!(job["org_id"], org.as_str());
    assert_eq!(job["rows_removed"][MEASUREMENT], 2, "{job}");
    assert_eq!(job["verification"][MEASUREMENT]["remaining"], 0, "{job}");
    let query = job["verification"][MEASUREMENT]["query"].as_str().unwrap();
    assert!(
        query.contains(&format!("FROM {DATABASE}.{MEASUREMENT}"))
            && query.contains(&format!("org_id = '{org}'")),
        "{query}"
    );
    assert_eq!(job["target"]["database"], DATABASE);
    assert!(job["finished_at"].is_string(), "{job}");
    let receipt = &job["receipt"];
    assert_eq!(receipt["receipt"]["erasure_id"], id.as_str(), "{receipt}");
    assert_eq!(receipt["receipt"]["rows_removed"][MEASUREMENT], 2);
    assert_eq!(
        receipt["receipt"]["verification"][MEASUREMENT]["result"], 0,
        "{receipt}"
    );
    // the receipt verifies offline, and fails once edited
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("receipt.json");
    std::fs::write(&file, receipt.to_string()).unwrap();
    let file = file.to_str().unwrap();
    let verified = memtrace_tests::cli::memtracectl(&["erasure", "verify", file], &[])
        .await
        .unwrap();
    assert_eq!(verified.code, Some(0), "{verified:?}");
    assert!(verified.stdout.contains(id.as_str()), "{verified:?}");
    let mut edited = receipt.clone();
    edited["receipt"]["rows_removed"][MEASUREMENT] = serde_json::json!(1);
    std::fs::write(file, edited.to_string()).unwrap();
    let refused = memtrace_tests::cli::memtracectl(&["erasure", "verify", file], &[])
        .await
        .unwrap();
    assert_ne!(
        refused.code,
        Some(0),
        "an edited receipt fails: {refused:?}"
    );
    assert!(
        refused.stderr.contains("verification failed"),
        "{refused:?}"
    );
    assert!(
        !receipt.to_string().contains(TOKEN),
        "no credential in the receipt"
    );
    assert!(!job.to_string().contains(TOKEN), "no credential in the job");

    assert_eq!(ids(&arc, MEASUREMENT, &org, "id").await, ["mem_c"]);
    assert_eq!(ids(&arc, MEASUREMENT, &other, "id").await, ["mem_a"]);
    eventually(
        "the erasure record removed",
        Duration::from_secs(10),
        async || (!on_bus(&cluster, &bus, &org, &id).await).then_some(()),
    )
    .await
    .unwrap();

    // the forged record stays unadopted (and on the bus, for an operator)
    assert!(
        show(&cluster, &forged_id)
            .await
            .unwrap_err()
            .contains("not found")
    );
    assert!(on_bus(&cluster, &bus, &org, &forged_id).await);

    // listing by org and by state; table output shows the receipt
    let list = cluster
        .ctl
        .json(&["erasure", "list", "--org", &org])
        .await
        .unwrap();
    let listed: Vec<&str> = list["erasures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["erasure_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [id.as_str()]);
    let none = cluster
        .ctl
        .json(&["erasure", "list", "--org", &other])
        .await
        .unwrap();
    assert_eq!(none["erasures"], json!([]));
    let blocked = cluster
        .ctl
        .json(&["erasure", "list", "--state", "blocked"])
        .await
        .unwrap();
    assert_eq!(blocked["erasures"], json!([]));
    let text = cluster.ctl.run(&["erasure", "show", &id]).await.unwrap();
    assert!(text.success, "{}", text.stderr);
    assert!(
        text.stdout.contains("done") && text.stdout.contains("receipt:"),
        "{}",
        text.stdout
    );

    // audited, and counted on /metrics
    let audit = cluster
        .ctl
        .json(&["audit", "list", "--action", "erasure."])
        .await
        .unwrap();
    assert_eq!(audit["entries"][0]["action"], "erasure.done", "{audit}");
    assert_eq!(audit["entries"][0]["target"], id.as_str());
    let metrics = cluster
        .control_plane
        .client()
        .get(format!("{}/metrics", cluster.control_plane.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("memtrace_erasure_outcomes_total{outcome=\"done\"} 1"),
        "{metrics}"
    );
    // the forged record was read every second, refused (and counted) once
    assert!(
        metrics.contains("memtrace_erasure_records_refused_total 1\n"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_an_org_erases_its_memories_agents_and_sessions_from_its_arc() {
    let cluster = Cluster::start_with_env("/erasure-b/", FAST).await.unwrap();
    let arc = arc_with_token(TOKEN, DATABASE).await.unwrap();
    let org = bound_org(&cluster, &arc, "leaving").await;
    let other = bound_org(&cluster, &arc, "staying").await;
    for o in [&org, &other] {
        write(&arc, MEASUREMENT, o, &["mem_1", "mem_2"], "id").await;
        write(&arc, "agents", o, &["agent_1"], "agent_id").await;
        write(&arc, "sessions", o, &["ses_1", "ses_2"], "session_id").await;
    }
    cluster.ctl.json(&["org", "delete", &org]).await.unwrap();

    let list = cluster
        .ctl
        .json(&["erasure", "list", "--org", &org])
        .await
        .unwrap();
    let jobs = list["erasures"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{list}");
    assert_eq!(jobs[0]["scope"], json!({"whole_org": true}));
    let id = jobs[0]["erasure_id"].as_str().unwrap().to_owned();
    let job = wait_done(&cluster, &id, Duration::from_secs(30)).await;
    assert_eq!(job["rows_removed"][MEASUREMENT], 2, "{job}");
    assert_eq!(job["rows_removed"]["agents"], 1, "{job}");
    assert_eq!(job["rows_removed"]["sessions"], 2, "{job}");
    for table in [MEASUREMENT, "agents", "sessions"] {
        assert_eq!(job["verification"][table]["remaining"], 0, "{job}");
    }
    assert!(ids(&arc, MEASUREMENT, &org, "id").await.is_empty());
    assert!(ids(&arc, "agents", &org, "agent_id").await.is_empty());
    assert!(ids(&arc, "sessions", &org, "session_id").await.is_empty());
    assert_eq!(
        ids(&arc, MEASUREMENT, &other, "id").await,
        ["mem_1", "mem_2"]
    );
    assert_eq!(ids(&arc, "agents", &other, "agent_id").await, ["agent_1"]);
    assert_eq!(
        ids(&arc, "sessions", &other, "session_id").await,
        ["ses_1", "ses_2"]
    );
    let bus = bus(&cluster).await;
    eventually(
        "the erasure record removed",
        Duration::from_secs(10),
        async || (!on_bus(&cluster, &bus, &org, &id).await).then_some(()),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_control_plane_killed_mid_job_resumes_it_after_a_restart() {
    let env: &[(&str, &str)] = &[
        ("MEMTRACE_CONTROL_PLANE_ERASURE_RECHECK_DELAY_MS", "4000"),
        ("MEMTRACE_CONTROL_PLANE_ERASURE_CLAIM_TTL_MS", "1000"),
    ];
    let mut cluster = Cluster::start_with_env("/erasure-c/", env).await.unwrap();
    let arc = arc_with_token(TOKEN, DATABASE).await.unwrap();
    let org = bound_org(&cluster, &arc, "resumed").await;
    write(
        &arc,
        MEASUREMENT,
        &org,
        &["mem_a", "mem_b", "mem_keep"],
        "id",
    )
    .await;
    let bus = bus(&cluster).await;
    let id = erasure_id(3);
    put_record(
        &cluster,
        &bus,
        &fleet_key(&cluster),
        &request(&org, &id, &["mem_a", "mem_b"]),
    )
    .await;
    // running: the first delete is done, the re-check is 4 s away
    eventually("the job running", Duration::from_secs(20), async || {
        let job = show(&cluster, &id).await?;
        if job["state"] == "running" && ids(&arc, MEASUREMENT, &org, "id").await == ["mem_keep"] {
            Ok(())
        } else {
            Err(job.to_string())
        }
    })
    .await
    .unwrap();
    cluster.control_plane.kill().await.unwrap();
    // a covered row that reached Arc late (flushed after the first delete)
    write(&arc, MEASUREMENT, &org, &["mem_b"], "id").await;
    cluster.restart_control_plane().await.unwrap();

    let job = wait_done(&cluster, &id, Duration::from_secs(40)).await;
    assert!(job["attempts"].as_u64().unwrap() >= 2, "resumed: {job}");
    assert_eq!(job["verification"][MEASUREMENT]["remaining"], 0, "{job}");
    assert_eq!(ids(&arc, MEASUREMENT, &org, "id").await, ["mem_keep"]);
    eventually(
        "the erasure record removed",
        Duration::from_secs(10),
        async || (!on_bus(&cluster, &bus, &org, &id).await).then_some(()),
    )
    .await
    .unwrap();
}

/// The bus record of `id` as the control plane left it.
async fn record(cluster: &Cluster, bus: &EtcdBus, org: &str, id: &str) -> Option<ErasureRecord> {
    let keys = StateKeys::new(&cluster.prefix);
    let key = keys.erasure(org, id);
    let read = bus.load(&key).await.unwrap();
    let kv = read.kvs.iter().find(|kv| kv.key == key)?;
    let key_ring = memtrace_common::fleet::FleetKeyring::new(fleet_key(cluster), Vec::new());
    let bytes =
        memtrace_common::state::open_record(&key_ring, keys.relative(&key).unwrap(), &kv.value)
            .expect("the control plane signs what it writes");
    Some(ErasureRecord::decode(bytes).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_deletes_and_orgs_without_arc_block_the_job_and_keep_the_record() {
    let cluster = Cluster::start_with_env("/erasure-d/", FAST).await.unwrap();
    let arc = ArcStandIn::builder()
        .cost_model(memtrace_tests::arc::CostModel::instant())
        .token(
            TOKEN,
            memtrace_tests::arc::TokenGrant::databases([DATABASE]).with_delete(),
        )
        .token(
            "read-only-token",
            memtrace_tests::arc::TokenGrant::databases([DATABASE]).read_only(),
        )
        .start()
        .await
        .unwrap();
    let org = cluster.org("refused").await.unwrap();
    cluster
        .add_arc(&org, &arc.url(), DATABASE, Some("read-only-token"))
        .await
        .unwrap();
    write(&arc, MEASUREMENT, &org, &["mem_a"], "id").await;
    let embedded = cluster.org("embedded").await.unwrap();
    let bus = bus(&cluster).await;
    let key = fleet_key(&cluster);
    let (refused_id, embedded_id) = (erasure_id(4), erasure_id(5));
    put_record(
        &cluster,
        &bus,
        &key,
        &request(&org, &refused_id, &["mem_a"]),
    )
    .await;
    put_record(
        &cluster,
        &bus,
        &key,
        &request(&embedded, &embedded_id, &["mem_x"]),
    )
    .await;

    for (org, id, says) in [
        (&org, &refused_id, "403"),
        (
            &embedded,
            &embedded_id,
            "embedded store erasure not implemented yet",
        ),
    ] {
        let job = eventually(
            &format!("{id} blocked"),
            Duration::from_secs(20),
            async || {
                let job = show(&cluster, id).await?;
                if job["state"] == "blocked" {
                    Ok(job)
                } else {
                    Err(job.to_string())
                }
            },
        )
        .await
        .unwrap();
        let detail = job["detail"].as_str().unwrap();
        assert!(detail.contains(says), "{detail}");
        // published on the record: workers keep hiding the rows
        let published = eventually("blocked on the bus", Duration::from_secs(10), async || {
            record(&cluster, &bus, org, id)
                .await
                .filter(|r| r.state == ErasureState::Blocked as i32)
        })
        .await
        .unwrap();
        assert_eq!(published.detail, detail);
        assert!(job["next_attempt_at"].is_string());
    }
    assert_eq!(
        ids(&arc, MEASUREMENT, &org, "id").await,
        ["mem_a"],
        "nothing deleted"
    );
    let blocked = cluster
        .ctl
        .json(&["erasure", "list", "--state", "blocked"])
        .await
        .unwrap();
    assert_eq!(
        blocked["erasures"].as_array().unwrap().len(),
        2,
        "{blocked}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_on_one_postgres_run_each_job_once() {
    let pg = tokio::task::spawn_blocking(memtrace_tests::postgres::PgServer::start)
        .await
        .unwrap()
        .unwrap();
    let url = pg.fresh_database("erasures").unwrap();
    let cluster = Cluster::start_on_database_with_env("/erasure-e/", &url, FAST)
        .await
        .unwrap();
    let replica = cluster.replica().await.unwrap();
    let arc = arc_with_token(TOKEN, DATABASE).await.unwrap();
    let org = bound_org(&cluster, &arc, "replicated").await;
    let memories: Vec<String> = (0..6).map(|i| format!("mem_{i}")).collect();
    let refs: Vec<&str> = memories.iter().map(String::as_str).collect();
    write(&arc, MEASUREMENT, &org, &refs, "id").await;
    let bus = bus(&cluster).await;
    let key = fleet_key(&cluster);
    let ids: Vec<String> = (10..16).map(erasure_id).collect();
    for (id, memory) in ids.iter().zip(&refs) {
        put_record(&cluster, &bus, &key, &request(&org, id, &[memory])).await;
    }
    for id in &ids {
        let job = wait_done(&cluster, id, Duration::from_secs(40)).await;
        assert_eq!(job["attempts"], 1, "run once: {job}");
        assert_eq!(job["rows_removed"][MEASUREMENT], 1, "{job}");
    }
    assert!(ids_of_org(&arc, &org).await.is_empty());
    // one `erasure.done` per job, whichever replica ran it
    let audit = cluster
        .ctl
        .json(&["audit", "list", "--action", "erasure.done"])
        .await
        .unwrap();
    let mut targets: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["target"].as_str().unwrap())
        .collect();
    targets.sort_unstable();
    let mut expected: Vec<&str> = ids.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(targets, expected);
    drop(replica);
}

async fn ids_of_org(arc: &ArcStandIn, org: &str) -> Vec<String> {
    ids(arc, MEASUREMENT, org, "id").await
}
