//! The one behavioural suite every [`Store`] backend must pass. Each check
//! uses fresh random ids, so checks can share a database.

use super::{ApiKeyRow, ArcBindingRow, AuditRecord, AuditWith, OrgRow, Store, StoreError};
use memtrace_common::envelope::{AuditKey, Keyring, MasterKey};
use memtrace_common::ids::new_id;
use std::sync::LazyLock;

/// The master keys the suite chains and verifies its audit entries with.
pub static KEYS: LazyLock<Keyring> =
    LazyLock::new(|| Keyring::new(MasterKey::new(&[0x5a; 32]), Vec::new()));

/// The key new entries are chained under: [`KEYS`]' active one.
pub static AUDIT_KEY: LazyLock<AuditKey> = LazyLock::new(|| KEYS.audit_key());

fn suite_record<T>(_: &T) -> AuditRecord {
    AuditRecord {
        at_ms: 1_700_000_000_000,
        actor: "fp-conformance".into(),
        action: "test.change".into(),
        target: "conformance".into(),
        outcome: "ok".into(),
        details_json: "{}".into(),
    }
}

/// The audit entry of a change in checks that are not about auditing.
pub fn audited<T: 'static>() -> AuditWith<'static, T> {
    AuditWith {
        key: &AUDIT_KEY,
        record: &suite_record::<T>,
    }
}

/// Runs every check; panics naming the first that fails.
pub async fn run_all(store: &dyn Store) {
    orgs(store).await;
    arc_bindings(store).await;
    api_keys(store).await;
    delete_org_cascades(store).await;
    meta(store).await;
    admin_tokens(store).await;
    settings_compare_and_swap(store).await;
    seeding_happens_once(store).await;
    audit_trail(store).await;
    concurrent_appends_never_fork(store).await;
    changes_commit_with_their_audit_entries(store).await;
    signing_keys(store).await;
    erasure_jobs(store).await;
    org_deletion_pins_erasures(store).await;
}

pub use super::conformance_admin::{admin_tokens, legacy_admin_tokens_keep_working};
pub use super::conformance_audit::changes_commit_with_their_audit_entries;
pub use super::conformance_config::{
    audit_trail, concurrent_appends_never_fork, seeding_happens_once, settings_compare_and_swap,
};
pub use super::conformance_erasure::{erasure_jobs, org_deletion_pins_erasures};
pub use super::conformance_signing_keys::signing_keys;

fn org(name: &str) -> OrgRow {
    OrgRow {
        id: new_id("org"),
        name: format!("{name}-{}", new_id("n")),
        created_at: 1_700_000_000_000,
    }
}

fn binding(org_id: &str, envelope: Option<Vec<u8>>) -> ArcBindingRow {
    ArcBindingRow {
        id: new_id("arc"),
        org_id: org_id.to_owned(),
        url: "http://127.0.0.1:8000".into(),
        database: "tenant_db".into(),
        measurement: "events".into(),
        api_key_envelope: envelope,
        created_at: 1,
        updated_at: 1,
    }
}

fn key(org_id: &str, name: &str) -> ApiKeyRow {
    ApiKeyRow {
        id: new_id("key"),
        org_id: org_id.to_owned(),
        name: name.to_owned(),
        key_hash: new_id("h").into_bytes(),
        scopes: "read,write".into(),
        created_at: 10,
        expires_at: None,
        last_used_at: None,
        revoked_at: None,
        legacy: None,
    }
}

fn is_conflict<T: std::fmt::Debug>(result: Result<T, StoreError>) -> bool {
    matches!(result, Err(StoreError::Conflict(_)))
}

/// Orgs: insert, get, list, name and id uniqueness.
pub async fn orgs(store: &dyn Store) {
    let a = org("alpha");
    store.insert_org(&a, audited()).await.expect("orgs: insert");
    let got = store
        .get_org(&a.id)
        .await
        .expect("orgs: get")
        .expect("orgs: inserted org is found");
    assert_eq!(got.org, a, "orgs: round trip");
    assert!(
        !got.has_arc_binding && got.active_api_keys == 0,
        "orgs: fresh org has nothing"
    );
    let same_name = OrgRow {
        id: new_id("org"),
        ..a.clone()
    };
    assert!(
        is_conflict(store.insert_org(&same_name, audited()).await),
        "orgs: duplicate name is a conflict"
    );
    let same_id = OrgRow {
        name: format!("other-{}", new_id("n")),
        ..a.clone()
    };
    assert!(
        is_conflict(store.insert_org(&same_id, audited()).await),
        "orgs: duplicate id is a conflict"
    );
    let listed = store.list_orgs().await.expect("orgs: list");
    assert!(
        listed.iter().any(|s| s.org == a),
        "orgs: list contains the org"
    );
    assert!(
        store
            .get_org("org_missing")
            .await
            .expect("orgs: get missing")
            .is_none()
    );
}

/// Arc bindings: org must exist, one per org, replace, CAS on the envelope, delete.
pub async fn arc_bindings(store: &dyn Store) {
    let orphan = binding("org_nonexistent_for_binding", None);
    assert!(
        is_conflict(store.put_arc_binding(&orphan, false, audited()).await),
        "arc: org must exist"
    );
    let o = org("arc");
    store
        .insert_org(&o, audited())
        .await
        .expect("arc: insert org");
    let first = binding(&o.id, Some(vec![1, 2, 3]));
    store
        .put_arc_binding(&first, false, audited())
        .await
        .expect("arc: bind");
    assert_eq!(
        store.get_arc_binding(&o.id).await.expect("arc: get"),
        Some(first.clone())
    );
    let second = binding(&o.id, None);
    assert!(
        is_conflict(store.put_arc_binding(&second, false, audited()).await),
        "arc: one binding per org"
    );
    store
        .put_arc_binding(&second, true, audited())
        .await
        .expect("arc: replace");
    assert_eq!(
        store
            .get_arc_binding(&o.id)
            .await
            .expect("arc: get replaced"),
        Some(second)
    );
    let third = binding(&o.id, Some(vec![9, 9]));
    store
        .put_arc_binding(&third, true, audited())
        .await
        .expect("arc: replace again");
    assert!(
        !store
            .swap_arc_envelope(&third.id, &[1], &[7], 5)
            .await
            .expect("arc: stale cas"),
        "arc: cas with a stale envelope must not write"
    );
    assert!(
        store
            .swap_arc_envelope(&third.id, &[9, 9], &[7], 5)
            .await
            .expect("arc: cas"),
        "arc: cas with the current envelope writes"
    );
    let swapped = store
        .get_arc_binding(&o.id)
        .await
        .expect("arc: get")
        .expect("arc: still bound");
    assert_eq!(
        (swapped.api_key_envelope, swapped.updated_at),
        (Some(vec![7]), 5)
    );
    assert!(
        store
            .list_arc_bindings()
            .await
            .expect("arc: list")
            .iter()
            .any(|b| b.id == third.id)
    );
    let summary = store
        .get_org(&o.id)
        .await
        .expect("arc: org")
        .expect("arc: org exists");
    assert!(
        summary.has_arc_binding,
        "arc: org summary shows the binding"
    );
    assert!(
        store
            .delete_arc_binding(&o.id, audited())
            .await
            .expect("arc: delete")
    );
    assert!(
        !store
            .delete_arc_binding(&o.id, audited())
            .await
            .expect("arc: delete again")
    );
    assert_eq!(
        store
            .get_arc_binding(&o.id)
            .await
            .expect("arc: get deleted"),
        None
    );
}

/// API keys: org must exist, unique active names, revoke, list filters, counts.
pub async fn api_keys(store: &dyn Store) {
    assert!(
        is_conflict(
            store
                .insert_api_key(&key("org_nonexistent_for_key", "k"), audited())
                .await
        ),
        "keys: org must exist"
    );
    let o = org("keys");
    store
        .insert_org(&o, audited())
        .await
        .expect("keys: insert org");
    let k1 = key(&o.id, "ci");
    store
        .insert_api_key(&k1, audited())
        .await
        .expect("keys: insert");
    assert!(
        is_conflict(store.insert_api_key(&key(&o.id, "ci"), audited()).await),
        "keys: active names are unique per org"
    );
    let mut expired = key(&o.id, "old");
    expired.expires_at = Some(1);
    store
        .insert_api_key(&expired, audited())
        .await
        .expect("keys: insert expired");
    assert_eq!(
        store.get_api_key(&k1.id).await.expect("keys: get"),
        Some(k1.clone())
    );
    // an imported Go memtrace key keeps its bcrypt hash and prefix; its id is taken
    let other = org("imported keys");
    store
        .insert_org(&other, audited())
        .await
        .expect("keys: insert org of imported keys");
    let mut imported = key(&other.id, "imported");
    let prefix = new_id("p")[2..18].to_owned();
    imported.id = format!("key_{prefix}");
    imported.legacy = Some(super::LegacyKeyHash {
        bcrypt_hash: "$2a$04$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234".into(),
        prefix,
    });
    store
        .insert_api_key(&imported, audited())
        .await
        .expect("keys: insert imported");
    assert_eq!(
        store
            .get_api_key(&imported.id)
            .await
            .expect("keys: get imported"),
        Some(imported.clone()),
        "keys: the legacy hash and prefix round-trip"
    );
    let mut same_id = key(&other.id, "imported again");
    same_id.id = imported.id.clone();
    assert!(
        is_conflict(store.insert_api_key(&same_id, audited()).await),
        "keys: an imported key's id is unique"
    );
    let count = store
        .get_org(&o.id)
        .await
        .expect("keys: org")
        .expect("keys: org exists")
        .active_api_keys;
    assert_eq!(count, 1, "keys: expired keys are not active");

    let revoked = store
        .revoke_api_key(&k1.id, 50, audited())
        .await
        .expect("keys: revoke")
        .expect("keys: found");
    assert_eq!(revoked.revoked_at, Some(50));
    let again = store
        .revoke_api_key(&k1.id, 60, audited())
        .await
        .expect("keys: revoke again")
        .expect("keys: found");
    assert_eq!(
        again.revoked_at,
        Some(50),
        "keys: revoking twice keeps the first time"
    );
    assert!(
        store
            .revoke_api_key("key_missing", 1, audited())
            .await
            .expect("keys: revoke missing")
            .is_none()
    );

    let active = store
        .list_api_keys(&o.id, false)
        .await
        .expect("keys: list active");
    assert_eq!(
        active.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
        vec![expired.id.as_str()]
    );
    let all = store
        .list_api_keys(&o.id, true)
        .await
        .expect("keys: list all");
    assert_eq!(all.len(), 2);
    store
        .insert_api_key(&key(&o.id, "ci"), audited())
        .await
        .expect("keys: a revoked key's name can be reused");

    // concurrent creates of one new name: exactly one wins, the others are
    // conflicts (not two active keys, not a raw database error)
    let racers: Vec<ApiKeyRow> = (0..4).map(|_| key(&o.id, "raced")).collect();
    let (a, b, c, d) = tokio::join!(
        store.insert_api_key(&racers[0], audited()),
        store.insert_api_key(&racers[1], audited()),
        store.insert_api_key(&racers[2], audited()),
        store.insert_api_key(&racers[3], audited()),
    );
    let results = [a, b, c, d];
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    assert!(
        results
            .iter()
            .all(|r| r.is_ok() || matches!(r, Err(StoreError::Conflict(_)))),
        "keys: losers are conflicts: {results:?}"
    );
}

/// Deleting an org removes its binding and keys and leaves a tombstone.
pub async fn delete_org_cascades(store: &dyn Store) {
    let o = org("doomed");
    store
        .insert_org(&o, audited())
        .await
        .expect("delete: insert org");
    store
        .put_arc_binding(&binding(&o.id, Some(vec![1])), false, audited())
        .await
        .expect("delete: bind");
    let k1 = key(&o.id, "a");
    store
        .insert_api_key(&k1, audited())
        .await
        .expect("delete: key a");
    store
        .insert_api_key(&key(&o.id, "b"), audited())
        .await
        .expect("delete: key b");
    let deletion = store
        .delete_org(&o.id, 99, None, audited())
        .await
        .expect("delete: delete")
        .expect("delete: org existed");
    assert_eq!(deletion.org, o);
    assert!(deletion.arc_binding_removed);
    assert_eq!(deletion.api_keys_removed, 2);
    assert!(
        deletion.api_key_ids.contains(&k1.id),
        "delete: removed key ids are reported"
    );
    let tombstones = store.list_tombstones().await.expect("delete: tombstones");
    assert!(
        tombstones
            .iter()
            .any(|t| t.org_id == o.id && t.deleted_at == 99),
        "delete: tombstone recorded"
    );
    assert!(
        !store
            .list_all_api_keys()
            .await
            .expect("delete: all keys")
            .iter()
            .any(|k| k.org_id == o.id)
    );
    assert!(store.get_org(&o.id).await.expect("delete: get").is_none());
    assert!(
        store
            .get_arc_binding(&o.id)
            .await
            .expect("delete: binding")
            .is_none()
    );
    assert!(
        store
            .get_api_key(&k1.id)
            .await
            .expect("delete: key")
            .is_none()
    );
    assert!(
        store
            .delete_org(&o.id, 100, None, audited())
            .await
            .expect("delete: again")
            .is_none()
    );
    // the name is free again, and re-creating the id clears its tombstone
    store
        .insert_org(
            &OrgRow {
                id: new_id("org"),
                ..o.clone()
            },
            audited(),
        )
        .await
        .expect("delete: name reusable");
    store
        .insert_org(
            &OrgRow {
                name: format!("again-{}", new_id("n")),
                ..o.clone()
            },
            audited(),
        )
        .await
        .expect("delete: id reusable");
    let tombstones = store.list_tombstones().await.expect("delete: tombstones");
    assert!(
        !tombstones.iter().any(|t| t.org_id == o.id),
        "delete: tombstone cleared on re-create"
    );
}

/// Meta values upsert; the database answers and is migrated.
pub async fn meta(store: &dyn Store) {
    let k = new_id("meta");
    assert_eq!(store.meta_get(&k).await.expect("meta: get missing"), None);
    store.meta_put(&k, "1").await.expect("meta: put");
    store.meta_put(&k, "2").await.expect("meta: overwrite");
    assert_eq!(
        store.meta_get(&k).await.expect("meta: get").as_deref(),
        Some("2")
    );
    assert!(store.ping().await.is_ok());
    assert!(
        store
            .applied_migration()
            .await
            .expect("migrations")
            .unwrap_or(0)
            >= 1
    );
}

#[cfg(test)]
mod tests {
    use crate::store::SqlStore;

    #[tokio::test]
    async fn sqlite_passes_the_conformance_suite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested/memtrace.db");
        let store = SqlStore::connect(&SqlStore::sqlite_url(path.to_str().expect("utf-8 path")))
            .await
            .expect("connect");
        store.migrate().await.expect("migrate");
        super::run_all(&store).await;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path)
                .expect("db file")
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(mode, 0o600, "the database file is private to its owner");
        }
    }

    #[tokio::test]
    async fn sqlite_admin_tokens_stored_before_ids_keep_working() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("legacy.db");
        let store = SqlStore::connect(&SqlStore::sqlite_url(path.to_str().expect("utf-8 path")))
            .await
            .expect("connect");
        super::legacy_admin_tokens_keep_working(&store).await;
    }
}
