//! The snapshot watcher against the in-process bus (the single-node bus, a
//! real `StateBus` implementation): bootstrap, live updates, deletes, invalid
//! records, compaction while disconnected, revision going backwards, and the
//! last-known-good file. The same behaviour against a real etcd is covered
//! end to end in `tests/tests/distribution.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_common::bus::memory::MemoryBus;
use memtrace_common::bus::{Op, StateBus};
use memtrace_common::envelope::Binding;
use memtrace_common::fleet::{FleetKey, FleetKeyring};
use memtrace_common::state::{RECORD_SCHEMA, StateKeys, sign_record};
use memtrace_data_plane::snapshot::watcher::{Watcher, WatcherOptions};
use memtrace_data_plane::snapshot::{SnapshotBuilder, SnapshotHandle};
use memtrace_proto::state::v1 as state;
use prost::Message;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

fn keys() -> StateKeys {
    StateKeys::new("/test/v1/")
}

fn fleet() -> Arc<FleetKeyring> {
    Arc::new(FleetKeyring::new(FleetKey::new(&[3; 32]), vec![]))
}

/// `record` as the control plane stores it at `key`: signed under the
/// fleet key.
fn put(key: String, record: Vec<u8>) -> Op {
    let path = keys().relative(&key).unwrap().to_owned();
    Op::Put {
        value: sign_record(fleet().active(), &path, &record),
        key,
    }
}

/// The marker the control plane puts in every publication.
fn marker() -> Op {
    Op::Put {
        key: keys().published_marker(),
        value: Vec::new(),
    }
}

/// The marker only a full reconciliation pass writes (in its last
/// transaction): the bus holds the whole published state.
fn reconciled() -> Op {
    Op::Put {
        key: keys().reconciled_marker(),
        value: Vec::new(),
    }
}

fn org(id: &str) -> Op {
    put(
        keys().org(id),
        state::OrgRecord {
            schema: RECORD_SCHEMA,
            org_id: id.into(),
            name: format!("name of {id}"),
            deleted: false,
            changed_at_ms: 1,
        }
        .encode_to_vec(),
    )
}

fn api_key(id: &str, org_id: &str, revoked: bool) -> Op {
    api_key_with_scopes(id, org_id, revoked, &["read", "write"])
}

fn api_key_with_scopes(id: &str, org_id: &str, revoked: bool, scopes: &[&str]) -> Op {
    put(
        keys().api_key(id),
        state::ApiKeyRecord {
            schema: RECORD_SCHEMA,
            key_id: id.into(),
            org_id: org_id.into(),
            key_hash: vec![7; 32],
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            expires_at_ms: 0,
            revoked,
            ..Default::default()
        }
        .encode_to_vec(),
    )
}

const ARC_URL: &str = "http://127.0.0.1:8000";

fn route(org_id: &str, secret: &str, fleet: &FleetKeyring) -> Op {
    route_record(org_id, secret, fleet, ARC_URL)
}

/// A route to `url` whose key was sealed for [`ARC_URL`].
fn route_record(org_id: &str, secret: &str, fleet: &FleetKeyring, url: &str) -> Op {
    let binding = Binding {
        org_id,
        record_id: "arc_1",
        purpose: "arc.api_key",
    };
    put(
        keys().arc_route(org_id),
        state::ArcRouteRecord {
            schema: RECORD_SCHEMA,
            org_id: org_id.into(),
            binding_id: "arc_1".into(),
            url: url.into(),
            database: "db".into(),
            measurement: "events".into(),
            sealed_api_key: fleet
                .active()
                .seal(binding, &[ARC_URL, "db"], secret.as_bytes()),
            fleet_key_id: fleet.active().id().into(),
        }
        .encode_to_vec(),
    )
}

fn options() -> WatcherOptions {
    WatcherOptions {
        progress_interval: Duration::from_millis(100),
        progress_timeout: Duration::from_millis(500),
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(100),
        lkg_path: None,
    }
}

fn start(
    bus: &MemoryBus,
    options: WatcherOptions,
) -> (Arc<SnapshotHandle>, tokio::task::JoinHandle<()>) {
    let handle = Arc::new(SnapshotHandle::default());
    let watcher = Watcher::new(
        Arc::new(bus.clone()),
        SnapshotBuilder::new(keys(), fleet()),
        handle.clone(),
        options,
    );
    (handle, tokio::spawn(watcher.run(CancellationToken::new())))
}

async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn bootstrap_live_update_delete_and_invalid_records() {
    let bus = MemoryBus::new();
    let ring = fleet();
    bus.apply(vec![
        org("org_a"),
        api_key("key_a", "org_a", false),
        route("org_a", "arc-secret", &ring),
    ])
    .await
    .unwrap();
    let (handle, task) = start(&bus, options());
    until("first snapshot", || handle.is_ready()).await;
    let snap = handle.load();
    assert_eq!(snap.orgs["org_a"].name, "name of org_a");
    assert!(snap.api_key("key_a").unwrap().write);
    let r = snap.route("org_a").unwrap();
    assert_eq!(r.api_key.as_deref().map(String::as_str), Some("arc-secret"));

    // live update: revoke, new org; all in one transaction
    let w = bus
        .apply(vec![api_key("key_a", "org_a", true), org("org_b")])
        .await
        .unwrap();
    until("revocation applied", || handle.load().applied_revision >= w).await;
    let snap = handle.load();
    assert!(snap.api_key("key_a").unwrap().revoked);
    assert!(snap.orgs.contains_key("org_b"));
    assert_eq!(handle.applies_total(), 1);

    // delete
    let w = bus
        .apply(vec![Op::Delete {
            key: keys().api_key("key_a"),
        }])
        .await
        .unwrap();
    until("delete applied", || handle.load().applied_revision >= w).await;
    assert!(handle.load().api_key("key_a").is_none());

    // invalid records are skipped; the previous good value stays
    let w = bus
        .apply(vec![
            Op::Put {
                key: keys().org("org_a"),
                value: b"garbage".to_vec(),
            },
            put(
                keys().org("org_b"),
                state::OrgRecord {
                    schema: 99,
                    org_id: "org_b".into(),
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
            org("org_c"),
        ])
        .await
        .unwrap();
    until("batch with invalid records applied", || {
        handle.load().applied_revision >= w
    })
    .await;
    let snap = handle.load();
    assert_eq!(
        snap.orgs["org_a"].name, "name of org_a",
        "previous good value kept"
    );
    assert_eq!(snap.orgs["org_b"].name, "name of org_b");
    assert!(
        snap.orgs.contains_key("org_c"),
        "valid records of the same batch applied"
    );
    assert_eq!(handle.rejected_total(), 2);

    // settings: validated against the registry, layered global < per-org
    let setting = |org: &str, key: &str, json: &str| {
        let keys = keys();
        put(
            if org.is_empty() {
                keys.global_setting(key)
            } else {
                keys.org_setting(org, key)
            },
            state::SettingRecord {
                schema: RECORD_SCHEMA,
                key: key.into(),
                org_id: org.into(),
                value_json: json.into(),
            }
            .encode_to_vec(),
        )
    };
    let rejected = handle.rejected_total();
    let w = bus
        .apply(vec![
            setting("", "arc.write_batch_size", "500"),
            setting("org_a", "arc.write_batch_size", "50"),
            setting("", "dedup.window_hours", "999999"),
        ])
        .await
        .unwrap();
    until("settings applied", || handle.load().applied_revision >= w).await;
    let snap = handle.load();
    assert_eq!(snap.settings().write(None).batch_size, 500);
    assert_eq!(snap.settings().write(Some("org_a")).batch_size, 50);
    assert_eq!(snap.settings().write(Some("org_b")).batch_size, 500);
    assert_eq!(
        snap.settings().dedup(None).window,
        Duration::from_secs(24 * 3600),
        "out-of-range value rejected, default kept"
    );
    assert_eq!(handle.rejected_total(), rejected + 1);

    // a worker registration is not published state
    let before = handle.load().applied_revision;
    let mut lease = bus
        .lease_put(&keys().worker("w9"), b"x".to_vec(), Duration::from_secs(10))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(handle.load().applied_revision, before);
    lease.revoke().await.unwrap();
    task.abort();
}

#[tokio::test]
async fn compaction_while_disconnected_reloads_and_catches_up() {
    let bus = MemoryBus::new();
    bus.apply(vec![
        org("org_a"),
        api_key("key_a", "org_a", false),
        marker(),
        reconciled(),
    ])
    .await
    .unwrap();
    let (handle, task) = start(&bus, options());
    until("first snapshot", || handle.is_ready()).await;
    let reloads = handle.reloads_total();

    // the bus becomes unreachable; meanwhile changes happen and history is compacted
    bus.set_unavailable(true);
    bus.break_watches();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        handle.load().orgs.contains_key("org_a"),
        "keeps serving while the bus is down"
    );
    // writes need the bus available again; the watcher is still backing off
    bus.set_unavailable(false);
    bus.apply(vec![
        Op::Delete {
            key: keys().api_key("key_a"),
        },
        marker(),
    ])
    .await
    .unwrap();
    let w = bus.apply(vec![org("org_z"), marker()]).await.unwrap();
    bus.compact(w).await.unwrap();
    until("caught up after compaction", || {
        handle.load().orgs.contains_key("org_z")
    })
    .await;
    assert!(
        handle.load().api_key("key_a").is_none(),
        "the delete during the outage is not lost"
    );
    assert!(
        handle.reloads_total() > reloads,
        "compaction forced a full reload"
    );
    task.abort();
}

#[tokio::test]
async fn revision_going_backwards_reloads_from_a_new_bus() {
    // a wiped etcd: the watcher's bus is replaced by an empty one with low revisions
    let bus = MemoryBus::new();
    for i in 0..20 {
        bus.apply(vec![org(&format!("org_{i}")), marker()])
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let lkg = dir.path().join("snapshot.json");
    let (handle, task) = start(
        &bus,
        WatcherOptions {
            lkg_path: Some(lkg.clone()),
            ..options()
        },
    );
    until("first snapshot", || handle.is_ready()).await;
    until("lkg written", || lkg.exists()).await;
    task.abort();

    // restart against a fresh, wiped bus: serves the LKG first, then converges
    let fresh = MemoryBus::new();
    fresh.set_unavailable(true);
    let (handle, task) = start(
        &fresh,
        WatcherOptions {
            lkg_path: Some(lkg.clone()),
            ..options()
        },
    );
    until("served from the last-known-good file", || handle.is_ready()).await;
    assert_eq!(handle.load().orgs.len(), 20);
    fresh.set_unavailable(false);
    // nothing published yet on the wiped bus: the last snapshot serves on
    fresh.apply(vec![org("org_new")]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(handle.load().orgs.len(), 20, "kept until republished");
    // an admin change reaches the wiped bus before the reconciler's pass:
    // its transaction carries the published marker, which is not the
    // whole state
    fresh.apply(vec![org("org_admin"), marker()]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        handle.load().orgs.len(),
        20,
        "a publication alone is not taken for the whole state"
    );
    assert!(!handle.load().orgs.contains_key("org_admin"));
    // the reconciler's pass ends with its marker
    fresh.apply(vec![reconciled()]).await.unwrap();
    until("converged on the wiped bus", || {
        let snap = handle.load();
        snap.orgs.len() == 2
            && snap.orgs.contains_key("org_new")
            && snap.orgs.contains_key("org_admin")
    })
    .await;
    task.abort();
}

#[tokio::test]
async fn cancelling_the_stop_token_ends_the_watcher_and_keeps_the_snapshot() {
    let bus = MemoryBus::new();
    bus.apply(vec![org("org_a")]).await.unwrap();
    let handle = Arc::new(SnapshotHandle::default());
    let watcher = Watcher::new(
        Arc::new(bus.clone()),
        SnapshotBuilder::new(keys(), fleet()),
        handle.clone(),
        options(),
    );
    let stop = CancellationToken::new();
    let task = tokio::spawn(watcher.run(stop.clone()));
    until("first snapshot", || handle.is_ready()).await;
    assert!(!task.is_finished());
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the watcher stops once cancelled")
        .unwrap();
    // a change after the stop is not applied; the last snapshot stays
    let before = handle.load().applied_revision;
    bus.apply(vec![org("org_b")]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(handle.load().applied_revision, before);
    assert!(handle.is_ready());
}

/// What someone with write access to etcd but without the fleet key can do:
/// nothing. Unsigned, re-keyed, altered or foreign-signed records are
/// refused and counted (the previous good value stays); a route pointed at
/// another Arc cannot carry the tenant's key there; and an API key whose
/// authentic record this worker cannot read is refused, not left as it was.
#[tokio::test]
async fn records_without_the_fleet_keys_authentication_are_refused() {
    let bus = MemoryBus::new();
    let ring = fleet();
    bus.apply(vec![
        org("org_a"),
        org("org_b"),
        api_key("key_a", "org_a", false),
        api_key("key_r", "org_a", true),
        route("org_a", "arc-secret", &ring),
    ])
    .await
    .unwrap();
    let (handle, task) = start(&bus, options());
    until("first snapshot", || handle.is_ready()).await;
    assert_eq!(handle.unauthenticated_total(), 0);

    // 1. an unsigned record granting key_a to org_b
    let unsigned = state::ApiKeyRecord {
        schema: RECORD_SCHEMA,
        key_id: "key_a".into(),
        org_id: "org_b".into(),
        key_hash: vec![7; 32],
        scopes: vec!["read".into(), "write".into(), "admin".into()],
        expires_at_ms: 0,
        revoked: false,
        ..Default::default()
    }
    .encode_to_vec();
    // 2. the signed record of revoked key_r copied over key_a's … and
    // key_a's own signed record copied over revoked key_r (un-revoking it)
    let copy_of = |key: String| {
        let snapshot = handle.load();
        snapshot.raw[&key].clone()
    };
    let revoked_record = copy_of(keys().api_key("key_r"));
    let active_record = copy_of(keys().api_key("key_a"));
    // 3. a record signed with a fleet key the workers do not hold
    let foreign = sign_record(
        &FleetKey::new(&[4; 32]),
        "orgs/org_b",
        &state::OrgRecord {
            schema: RECORD_SCHEMA,
            org_id: "org_b".into(),
            name: "renamed".into(),
            deleted: true,
            changed_at_ms: 2,
        }
        .encode_to_vec(),
    );
    let w = bus
        .apply(vec![
            Op::Put {
                key: keys().api_key("key_a"),
                value: unsigned,
            },
            Op::Put {
                key: keys().api_key("key_x"),
                value: revoked_record,
            },
            Op::Put {
                key: keys().api_key("key_r"),
                value: active_record,
            },
            Op::Put {
                key: keys().org("org_b"),
                value: foreign,
            },
        ])
        .await
        .unwrap();
    until("forged batch seen", || handle.load().revision >= w).await;
    let snap = handle.load();
    assert_eq!(snap.api_key("key_a").unwrap().org_id, "org_a");
    assert!(!snap.api_key("key_a").unwrap().admin);
    assert!(snap.api_key("key_r").unwrap().revoked, "still revoked");
    assert!(snap.api_key("key_x").is_none());
    assert!(!snap.orgs["org_b"].deleted);
    assert_eq!(handle.unauthenticated_total(), 4);

    // a route pointed at another host: the record is authentic (the
    // control plane's own seal), but the key was sealed for ARC_URL only
    let w = bus
        .apply(vec![route_record(
            "org_a",
            "arc-secret",
            &ring,
            "http://evil:8000",
        )])
        .await
        .unwrap();
    until("moved route seen", || handle.load().revision >= w).await;
    let r = handle.load().route("org_a").unwrap().clone();
    assert_eq!(r.url, ARC_URL, "the route to the original Arc stays");

    // an authentic key record this worker cannot read (a scope from a
    // newer control plane) drops the key instead of keeping its old entry
    let rejected = handle.rejected_total();
    let w = bus
        .apply(vec![api_key_with_scopes(
            "key_a",
            "org_a",
            false,
            &["read", "time-travel"],
        )])
        .await
        .unwrap();
    until("unreadable key record seen", || handle.load().revision >= w).await;
    assert!(handle.load().api_key("key_a").is_none(), "fails closed");
    assert_eq!(handle.rejected_total(), rejected + 1);
    task.abort();
}
