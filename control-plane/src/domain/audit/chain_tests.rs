//! The audit trail through the domain: the keyed chain against forgery and
//! across master-key rotation and the unkeyed boundary.

use crate::auth::AdminActor;
use crate::domain::types::{ApiKeySpec, ArcSpec, OrgId, OrgName};
use crate::domain::{ControlPlane, Publisher};
use crate::store::{AuditHead, AuditRecord, SqlStore, Store};
use memtrace_common::bus::memory::MemoryBus;
use memtrace_common::envelope::{Keyring, MasterKey};
use memtrace_common::state::StateKeys;
use std::sync::Arc;
use std::time::Duration;

fn control_plane(store: &Arc<SqlStore>, keyring: Keyring) -> ControlPlane {
    let publisher = Publisher::new(
        Arc::new(MemoryBus::new()),
        StateKeys::default(),
        Arc::new(memtrace_common::fleet::ephemeral_keyring()),
    );
    ControlPlane::new(
        store.clone(),
        Arc::new(keyring),
        Arc::new(publisher),
        Duration::from_secs(1),
    )
}

async fn store(dir: &tempfile::TempDir) -> Arc<SqlStore> {
    let url = SqlStore::sqlite_url(dir.path().join("cp.db").to_str().expect("utf-8"));
    let store = SqlStore::connect(&url).await.expect("connect");
    store.migrate().await.expect("migrate");
    Arc::new(store)
}

fn key(byte: u8) -> MasterKey {
    MasterKey::new(&[byte; 32])
}

fn admin() -> AdminActor {
    AdminActor {
        fingerprint: "fp-test".into(),
    }
}

/// An org with a key and a binding, each change audited (3 entries).
async fn changes(cp: &ControlPlane, name: &str) -> OrgId {
    let org = cp
        .create_org(&admin(), &OrgName::parse(name).expect("name"))
        .await
        .expect("create org")
        .value
        .org;
    let org_id = OrgId::parse(&org.id).expect("org id");
    let spec = ApiKeySpec::parse(&org.id, "ci", &["read"], 0).expect("spec");
    cp.create_api_key(&admin(), &spec).await.expect("key");
    let arc = ArcSpec::parse("http://127.0.0.1:9", "db", "events", "arc-key").expect("arc");
    cp.bind_arc(&admin(), &org_id, arc, false)
        .await
        .expect("bind");
    org_id
}

/// A database from before the keyed chain (2 unkeyed entries), then keyed
/// changes: verifies, with the unkeyed prefix reported. Then an attacker
/// rewrites entry 4 and recomputes the plain SHA-256 chain and head through
/// SQL, which the unkeyed chain could not tell from the real one: the keyed
/// chain names entry 4.
#[tokio::test]
async fn a_forged_entry_with_a_recomputed_sha256_chain_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(&dir).await;
    let old = |n: i64| AuditRecord {
        at_ms: 1_600_000_000_000 + n,
        actor: "fp-old".into(),
        action: "config.set".into(),
        target: format!("k{n}"),
        outcome: "ok".into(),
        details_json: "{}".into(),
    };
    store
        .append_unkeyed_for_tests(&[old(1), old(2)])
        .await
        .expect("old entries");
    let cp = control_plane(&store, Keyring::new(key(7), Vec::new()));
    changes(&cp, "acme").await;
    let report = cp.verify_audit().await.expect("verify");
    assert!(report.ok(), "{report:?}");
    assert_eq!((report.entries, report.unkeyed_entries), (5, 2));

    let mut entries = store.audit_range(0, 100).await.expect("range");
    assert_eq!(entries[3].action, "key.create");
    entries[3].actor = "fp-someone-else".into();
    let mut prev = entries[2].hash.clone();
    for entry in &mut entries[3..] {
        entry.prev_hash = prev;
        entry.hash = entry.unkeyed_hash().to_vec();
        prev = entry.hash.clone();
    }
    let head = AuditHead {
        seq: 5,
        hash: prev,
        kek_id: None,
        mac: None,
    };
    store
        .overwrite_audit_for_tests(&entries[3..], &head)
        .await
        .expect("forge");
    let report = cp.verify_audit().await.expect("verify");
    assert!(!report.ok());
    let broken = report.broken.expect("the forgery is found");
    assert_eq!(broken.seq, 4, "{broken}");
    assert!(broken.reason.contains("MAC"), "{broken}");
}

/// Entries written under a master key verify while that key is held (as a
/// previous key after a rotation); without it they are unverifiable, which
/// is not a break.
#[tokio::test]
async fn entries_verify_across_rotation_and_are_unverifiable_without_their_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(&dir).await;
    let before = control_plane(&store, Keyring::new(key(1), Vec::new()));
    let old_kek = before.keyring.active_kek_id();
    changes(&before, "before").await;
    let rotated = control_plane(&store, Keyring::new(key(2), vec![key(1)]));
    rotated.rotate_master(&admin()).await.expect("rotate");
    changes(&rotated, "after").await;
    let report = rotated.verify_audit().await.expect("verify");
    assert!(report.ok(), "{report:?}");
    assert_eq!((report.entries, report.unkeyed_entries), (7, 0));

    let retired = control_plane(&store, Keyring::new(key(2), Vec::new()));
    let report = retired.verify_audit().await.expect("verify");
    assert_eq!(report.broken, None, "not tampered: {report:?}");
    assert!(!report.ok());
    assert_eq!(report.entries, 7);
    let [range] = report.unverifiable.as_slice() else {
        panic!("one key's entries: {report:?}");
    };
    assert_eq!(
        range.to_string(),
        format!("unverifiable: key {old_kek} not held (3 entries, 1–3)")
    );
}
