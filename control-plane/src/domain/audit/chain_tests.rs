//! The audit trail through the domain: the keyed chain against forgery and
//! across master-key rotation and the unkeyed boundary, and changes that
//! commit only with their entries.

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

/// An org, key or binding change whose audit entry cannot be appended is
/// not made: before, the change committed first and a failed append only
/// logged an error. The append fails for real: the chain's head row is
/// gone.
#[tokio::test]
async fn a_change_whose_entry_cannot_be_appended_is_not_made() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(&dir).await;
    let cp = control_plane(&store, Keyring::new(key(7), Vec::new()));
    let org_id = changes(&cp, "kept").await;
    store
        .execute_raw_for_tests("DELETE FROM audit_head")
        .await
        .expect("break the head");

    let created = cp
        .create_org(&admin(), &OrgName::parse("lost").expect("name"))
        .await;
    assert!(created.is_err(), "{created:?}");
    assert_eq!(
        cp.list_orgs().await.expect("orgs").len(),
        1,
        "no org without its entry"
    );
    let spec = ApiKeySpec::parse(org_id.as_str(), "second", &["read"], 0).expect("spec");
    assert!(cp.create_api_key(&admin(), &spec).await.is_err());
    let keys = cp.list_api_keys(&org_id, true).await.expect("keys");
    assert_eq!(keys.len(), 1, "no key without its entry");
    let key_id = crate::domain::types::ApiKeyId::parse(&keys[0].id).expect("key id");
    assert!(cp.revoke_api_key(&admin(), &key_id).await.is_err());
    assert_eq!(
        cp.list_api_keys(&org_id, false).await.expect("keys").len(),
        1,
        "no revocation without its entry"
    );
    assert!(cp.remove_arc_binding(&admin(), &org_id).await.is_err());
    assert!(
        cp.get_arc_binding(&org_id).await.is_ok(),
        "no unbinding without its entry"
    );
    assert!(cp.delete_org(&admin(), &org_id).await.is_err());
    assert!(
        cp.get_org(&org_id).await.is_ok(),
        "no delete without its entry"
    );
    assert_eq!(store.audit_range(0, 100).await.expect("range").len(), 3);
}
