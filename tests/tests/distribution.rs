//! Distribution through a real etcd: the control plane publishes, in-test
//! watchers (the data-plane snapshot library) follow. Bootstrap, live
//! updates, deletes, revocation, no plaintext Arc key in etcd, etcd stopped
//! and restarted, etcd wiped, compaction while a worker was away, invalid
//! records, worker registration and cluster status.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_common::bus::Op;
use memtrace_common::state::StateKeys;
use memtrace_data_plane::registration::{self, WorkerIdentity};
use memtrace_data_plane::snapshot::watcher::WatcherOptions;
use memtrace_tests::cli::Ctl;
use memtrace_tests::cluster::{Cluster, eventually};
use memtrace_tests::grpc::get_text;
use memtrace_tests::metrics::sample;
use memtrace_tests::watchers::{TestWatcher, etcd_bus, fast_options, fleet};
use serde_json::Value;
use std::time::Duration;

const ARC_KEY: &str = "arc-tenant-key-for-distribution-0042";
const WAIT: Duration = Duration::from_secs(10);
const PREFIX: &str = "/memtrace-test/v1/";

/// A watcher of the cluster's published state with `options`.
async fn watcher_with(c: &Cluster, options: WatcherOptions) -> TestWatcher {
    TestWatcher::start(
        etcd_bus(&c.etcd.endpoint()).await.unwrap(),
        &c.prefix,
        fleet(&c.fleet_key).unwrap(),
        options,
    )
}

async fn watcher(c: &Cluster) -> TestWatcher {
    watcher_with(c, fast_options()).await
}

/// The cluster status once `worker_id` reports in sync; panics with the
/// last status after [`WAIT`].
async fn worker_in_sync(ctl: &Ctl, worker_id: &str, what: &str) -> Value {
    eventually(what, WAIT, async || {
        let status = ctl.json(&["status"]).await.unwrap();
        let ok = status["workers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["worker_id"] == worker_id && w["in_sync"] == true);
        if ok { Ok(status) } else { Err(status) }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_and_workers_follow_with_no_plaintext_in_etcd() {
    let c = Cluster::start(PREFIX).await.unwrap();
    let org_id = c.org("dist").await.unwrap();
    c.add_arc(&org_id, "http://127.0.0.1:9", "dist", Some(ARC_KEY))
        .await
        .unwrap();
    let key = c
        .ctl
        .json(&["key", "create", "--org", &org_id, "--name", "w"])
        .await
        .unwrap();
    let key_id = key["id"].as_str().unwrap().to_owned();
    let secret = key["key"].as_str().unwrap().to_owned();

    // bootstrap
    let w = watcher(&c).await;
    w.wait_for("org, route and key", WAIT, |s| {
        s.orgs.contains_key(&org_id) && s.route(&org_id).is_some() && s.api_key(&key_id).is_some()
    })
    .await
    .unwrap();
    let snap = w.snapshot();
    let route = snap.route(&org_id).unwrap();
    assert_eq!(
        route.api_key.as_deref().map(String::as_str),
        Some(ARC_KEY),
        "opened with the fleet key"
    );
    assert_eq!(route.database, "dist");
    let entry = snap.api_key(&key_id).unwrap();
    let parsed = memtrace_common::credentials::parse_api_key(&secret).unwrap();
    assert!(memtrace_common::credentials::hashes_match(
        &entry.hash,
        &parsed.hash
    ));
    assert!(entry.read && entry.write && !entry.revoked);

    // a second watcher started later sees the same state
    let w2 = watcher(&c).await;
    w2.wait_for("same state", WAIT, |s| s.api_key(&key_id).is_some())
        .await
        .unwrap();

    // a runtime setting reaches every watcher, with an audit entry
    let set = c
        .ctl
        .json(&["config", "set", "arc.write_batch_size", "500"])
        .await
        .unwrap();
    let revision = set["revision"].as_i64().expect("config set published");
    for watcher in [&w, &w2] {
        watcher
            .wait_for("arc.write_batch_size 500", WAIT, |s| {
                s.applied_revision >= revision && s.settings().write(None).batch_size == 500
            })
            .await
            .unwrap();
    }
    let audit = c.ctl.json(&["audit", "list"]).await.unwrap();
    let entry = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["seq"] == set["audit_seq"])
        .cloned()
        .unwrap_or_else(|| panic!("no audit entry {} in {audit}", set["audit_seq"]));
    assert!(
        entry["action"].as_str().unwrap().starts_with("config."),
        "{entry}"
    );
    assert!(
        entry["actor"].as_str().unwrap().starts_with("fp-"),
        "{entry}"
    );
    assert!(
        audit.to_string().contains("key.create") && audit.to_string().contains("arc.bind"),
        "org/key/arc changes are audited too: {audit}"
    );
    let verified = c.ctl.json(&["audit", "verify"]).await.unwrap();
    assert_eq!(verified["ok"], true, "{verified}");

    // live update: revocation reaches both watchers
    c.ctl.json(&["key", "revoke", &key_id]).await.unwrap();
    for watcher in [&w, &w2] {
        watcher
            .wait_for("revocation", WAIT, |s| {
                s.api_key(&key_id).is_some_and(|k| k.revoked)
            })
            .await
            .unwrap();
    }

    // no value in etcd holds the plaintext arc key, the api key or the master key
    let bus = etcd_bus(&c.etcd.endpoint()).await.unwrap();
    let all = bus.load("/").await.unwrap();
    assert!(all.kvs.len() >= 4, "scanned {} values", all.kvs.len());
    for kv in &all.kvs {
        for (what, needle) in [
            ("arc key", ARC_KEY),
            ("api key", secret.as_str()),
            ("master key", c.control_plane.spec.master_key.as_str()),
        ] {
            assert!(
                !kv.value
                    .windows(needle.len())
                    .any(|win| win == needle.as_bytes()),
                "{what} in clear under {}",
                kv.key
            );
        }
    }

    // worker registration and cluster status
    let keys = StateKeys::new(&c.prefix);
    let stop_reg = tokio_util::sync::CancellationToken::new();
    let reg = tokio::spawn(registration::run(
        bus.clone(),
        keys.clone(),
        WorkerIdentity {
            worker_id: "worker-a".into(),
            address: "127.0.0.1:9100".into(),
            version: "test".into(),
            started_at_ms: 1,
        },
        w.handle.clone(),
        Duration::from_secs(3),
        Duration::from_millis(100),
        stop_reg.clone(),
    ));
    let status = worker_in_sync(&c.ctl, "worker-a", "worker in sync").await;
    assert_eq!(status["bus"], "etcd");
    assert!(status["published_revision"].as_i64().unwrap() > 0);
    assert_eq!(status["workers_in_sync"], 1);
    let workers = c.ctl.json(&["workers"]).await.unwrap();
    assert_eq!(
        workers["workers"][0]["address"], "127.0.0.1:9100",
        "{workers}"
    );

    // delete cascades through publication: tombstone, route and keys gone
    c.ctl.json(&["org", "delete", &org_id]).await.unwrap();
    w.wait_for("org deleted", WAIT, |s| {
        s.orgs.get(&org_id).is_some_and(|o| o.deleted)
            && s.route(&org_id).is_none()
            && s.api_key(&key_id).is_none()
    })
    .await
    .unwrap();
    // the registration follows the applied revision: the worker is in sync again
    worker_in_sync(&c.ctl, "worker-a", "worker in sync after delete").await;

    // a stopping worker revokes its lease: gone at once, not after its TTL
    // (checked well inside the 3 s TTL, so an expiry cannot pass for it)
    let asked = std::time::Instant::now();
    stop_reg.cancel();
    tokio::time::timeout(Duration::from_secs(1), reg)
        .await
        .expect("registration stops promptly")
        .unwrap();
    let workers = c.ctl.json(&["status"]).await.unwrap();
    assert!(
        asked.elapsed() < Duration::from_millis(1_500),
        "checked {:?} after the stop: too close to the TTL to tell revocation from expiry",
        asked.elapsed()
    );
    assert_eq!(
        workers["bus_reachable"], true,
        "an unreadable bus also lists no workers: {workers}"
    );
    assert_eq!(
        workers["workers"].as_array().map(Vec::len),
        Some(0),
        "revoked, well within the 3 s ttl: {workers}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_stopped_restarted_and_wiped_workers_keep_serving_then_converge() {
    let mut c = Cluster::start(PREFIX).await.unwrap();
    let org_id = c.org("resilient").await.unwrap();
    let w = watcher(&c).await;
    w.wait_for("org", WAIT, |s| s.orgs.contains_key(&org_id))
        .await
        .unwrap();

    // etcd down: the worker keeps serving; the change is saved, publication deferred
    tokio::task::block_in_place(|| c.etcd.stop()).unwrap();
    let key = c
        .ctl
        .json(&["key", "create", "--org", &org_id, "--name", "during-outage"])
        .await
        .unwrap();
    let key_id = key["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        w.snapshot().orgs.contains_key(&org_id),
        "still serving the last snapshot"
    );
    assert!(w.snapshot().api_key(&key_id).is_none());

    // etcd back: the reconciler publishes the missed change, the worker converges
    tokio::task::block_in_place(|| c.etcd.start_again()).unwrap();
    w.wait_for(
        "missed change after restart",
        Duration::from_secs(20),
        |s| s.api_key(&key_id).is_some(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\ncontrol plane log:\n{}", c.control_plane.logs()));

    // etcd wiped: the control plane republishes everything, the worker converges
    tokio::task::block_in_place(|| c.etcd.wipe_and_restart()).unwrap();
    let key2 = c
        .ctl
        .json(&["key", "create", "--org", &org_id, "--name", "after-wipe"])
        .await
        .unwrap();
    let key2_id = key2["id"].as_str().unwrap().to_owned();
    w.wait_for("state after wipe", Duration::from_secs(30), |s| {
        s.orgs.contains_key(&org_id)
            && s.api_key(&key_id).is_some()
            && s.api_key(&key2_id).is_some()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\ncontrol plane log:\n{}", c.control_plane.logs()));
    let bus = etcd_bus(&c.etcd.endpoint()).await.unwrap();
    let keys = StateKeys::new(&c.prefix);
    let republished = bus.load(&keys.api_key(&key_id)).await.unwrap();
    assert_eq!(
        republished.kvs.len(),
        1,
        "the wiped etcd holds the key again"
    );
    assert!(
        c.control_plane.logs().contains("reconciled"),
        "{}",
        c.control_plane.logs()
    );
    // what an operator sees of it: the change made while etcd was down
    // deferred, the bus probes that failed, and the passes that repaired
    let metrics = get_text(&c.control_plane.url(), "/metrics").await;
    for (name, labels) in [
        ("memtrace_publications_total", vec![r#"outcome="deferred""#]),
        (
            "memtrace_reconcile_passes_total",
            vec![r#"outcome="repaired""#],
        ),
        ("memtrace_reconcile_repairs_total", vec![r#"op="put""#]),
        ("memtrace_state_bus_errors_total", vec![]),
    ] {
        let value = sample(&metrics, name, &labels);
        assert!(value >= 1.0, "{name}{labels:?} = {value}\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_while_a_worker_was_away_and_invalid_records() {
    let c = Cluster::start(PREFIX).await.unwrap();
    let org_id = c.org("away").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lkg = dir.path().join("snapshot.json");
    let options = || WatcherOptions {
        lkg_path: Some(lkg.clone()),
        ..fast_options()
    };
    let bus = etcd_bus(&c.etcd.endpoint()).await.unwrap();
    let w = watcher_with(&c, options()).await;
    w.wait_for("org", WAIT, |s| s.orgs.contains_key(&org_id))
        .await
        .unwrap();
    let away_revision = w.snapshot().revision;
    drop(w); // the worker goes away

    // meanwhile: changes, then compaction past the worker's revision
    let key = c
        .ctl
        .json(&["key", "create", "--org", &org_id, "--name", "while-away"])
        .await
        .unwrap();
    let key_id = key["id"].as_str().unwrap().to_owned();
    let current = bus.current_revision().await.unwrap();
    assert!(current > away_revision);
    bus.compact(current).await.unwrap();

    // it comes back from its last-known-good file, finds its revision compacted, reloads
    let w = watcher_with(&c, options()).await;
    w.wait_for("change made while away", WAIT, |s| {
        s.api_key(&key_id).is_some()
    })
    .await
    .unwrap();
    assert!(
        w.handle.reloads_total() >= 2,
        "lkg load + compaction reload"
    );

    // an invalid record is skipped and the previous good value stays
    let keys = StateKeys::new(&c.prefix);
    let rejected = w.handle.rejected_total();
    bus.apply(vec![Op::Put {
        key: keys.org(&org_id),
        value: b"not a record".to_vec(),
    }])
    .await
    .unwrap();
    eventually("invalid record rejected", WAIT, async || {
        (w.handle.rejected_total() != rejected).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(
        w.snapshot().orgs[&org_id].name,
        "away",
        "previous good value kept"
    );
}
