#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::auth::AdminActor;
use crate::domain::{ControlPlane, Publisher};
use crate::store::{AuditFilter, SqlStore};
use memtrace_common::envelope::MasterKey;
use memtrace_common::receipt::{ErasureTarget, KeySet, TableVerification, verify};
use memtrace_common::state::StateKeys;
use std::collections::BTreeMap;
use std::time::Duration;

fn binding(key_id: &str) -> memtrace_common::envelope::Binding<'_> {
    memtrace_common::envelope::Binding {
        org_id: "",
        record_id: key_id,
        purpose: RECEIPT_KEY_PURPOSE,
    }
}

async fn store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    let url = SqlStore::sqlite_url(dir.path().join("cp.db").to_str().unwrap());
    let store = SqlStore::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    Arc::new(store)
}

fn keyring(active: u8, previous: &[u8]) -> Arc<Keyring> {
    Arc::new(Keyring::new(
        MasterKey::new(&[active; 32]),
        previous.iter().map(|b| MasterKey::new(&[*b; 32])).collect(),
    ))
}

fn receipt() -> Receipt {
    let now = jiff::Timestamp::now();
    Receipt {
        receipt_id: "rcp_1".into(),
        erasure_id: "era_1".into(),
        org_id: "org_1".into(),
        target: ErasureTarget::Embedded,
        scope: serde_json::json!({"kind": "org"}),
        requested_by: "fp-test".into(),
        requested_at: now,
        started_at: now,
        finished_at: now,
        rows_removed: BTreeMap::from([("memories".into(), 2)]),
        verification: BTreeMap::from([(
            "memories".into(),
            TableVerification {
                query: "SELECT COUNT(*) FROM memories WHERE org_id = 'org_1'".into(),
                result: 0,
            },
        )]),
        issued_at: jiff::Timestamp::UNIX_EPOCH,
    }
}

async fn trusted(signer: &ReceiptSigner) -> KeySet {
    KeySet {
        keys: signer.public_keys().await.unwrap(),
    }
}

#[tokio::test]
async fn signs_with_a_key_created_on_first_need() {
    let dir = tempfile::tempdir().unwrap();
    let signer = ReceiptSigner::new(store(&dir).await, keyring(1, &[]));
    assert!(signer.public_keys().await.unwrap().is_empty());
    let signed = signer.sign(receipt()).await.unwrap();
    assert_eq!(signed.signature.key_id, "rk_1");
    assert_ne!(signed.receipt.issued_at, jiff::Timestamp::UNIX_EPOCH);
    let keys = signer.public_keys().await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].public_key, signed.signature.public_key);
    assert!(keys[0].retired_at.is_none() && keys[0].created_at.is_some());
    let verified = verify(
        signed.to_json_pretty().as_bytes(),
        Some(&trusted(&signer).await),
    )
    .unwrap();
    assert_eq!(verified.receipt.rows_removed["memories"], 2);
    // the same key signs the next receipt; ensure_key does not add one
    assert_eq!(signer.ensure_key().await.unwrap().key_id, "rk_1");
    let again = signer.sign(receipt()).await.unwrap();
    assert_eq!(again.signature.public_key, signed.signature.public_key);
}

#[tokio::test]
async fn the_private_key_is_stored_sealed_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let signer = ReceiptSigner::new(store.clone(), keyring(1, &[]));
    signer.ensure_key().await.unwrap();
    let row = store
        .list_signing_keys(crate::store::KeyFamily::Receipt)
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert!(!format!("{row:?}").contains("envelope"));
    let seed = keyring(1, &[])
        .open(binding(&row.key_id), &row.private_envelope)
        .unwrap();
    let file = [
        std::fs::read(dir.path().join("cp.db")).unwrap(),
        std::fs::read(dir.path().join("cp.db-wal")).unwrap_or_default(),
    ]
    .concat();
    assert!(
        !file.windows(32).any(|w| w == seed.as_slice()),
        "seed in clear in the database"
    );
    // bound to its key id: moved to another version it does not open
    assert!(
        keyring(1, &[])
            .open(binding("rk_2"), &row.private_envelope)
            .is_err()
    );
    // without its master key, signing fails and says why
    let stranger = ReceiptSigner::new(store, keyring(2, &[]));
    let error = stranger.sign(receipt()).await.unwrap_err();
    assert!(matches!(error, ControlPlaneError::Secret(_)), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_creating_the_first_key_at_once_converge_on_one() {
    let dir = tempfile::tempdir().unwrap();
    let url = SqlStore::sqlite_url(dir.path().join("cp.db").to_str().unwrap());
    let first = store(&dir).await;
    let mut signers = vec![ReceiptSigner::new(first, keyring(1, &[]))];
    for _ in 0..3 {
        let other: Arc<dyn Store> = Arc::new(SqlStore::connect(&url).await.unwrap());
        signers.push(ReceiptSigner::new(other, keyring(1, &[])));
    }
    let tasks: Vec<_> = signers
        .iter()
        .cloned()
        .map(|s| tokio::spawn(async move { s.sign(receipt()).await }))
        .collect();
    let mut signed = Vec::new();
    for task in tasks {
        signed.push(task.await.unwrap().unwrap());
    }
    let keys = signers[0].public_keys().await.unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    for s in signed {
        assert_eq!(s.signature.public_key, keys[0].public_key);
    }
}

#[tokio::test]
async fn rotation_adds_a_version_and_keeps_the_old_public_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let signer = ReceiptSigner::new(store.clone(), keyring(1, &[]));
    let old = signer.sign(receipt()).await.unwrap();
    let actor = AdminActor {
        fingerprint: "fp-rotator".into(),
    };
    let new_key = signer.rotate(&actor).await.unwrap();
    assert_eq!(new_key.key_id, "rk_2");
    let keys = signer.public_keys().await.unwrap();
    assert_eq!(
        keys.iter().map(|k| k.key_id.as_str()).collect::<Vec<_>>(),
        ["rk_1", "rk_2"]
    );
    assert!(keys[0].retired_at.is_some() && keys[1].retired_at.is_none());
    let new = signer.sign(receipt()).await.unwrap();
    assert_eq!(new.signature.key_id, "rk_2");
    let set = trusted(&signer).await;
    for doc in [&old, &new] {
        verify(doc.to_json_pretty().as_bytes(), Some(&set)).unwrap();
    }
    // both additions are in the audit trail, with their actors
    let entries = store
        .list_audit(&AuditFilter {
            limit: 100,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    let actions: Vec<_> = entries
        .iter()
        .filter(|e| e.action.starts_with("receipt_key."))
        .map(|e| (e.action.as_str(), e.target.as_str(), e.actor.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            ("receipt_key.rotate", "rk_2", "fp-rotator"),
            ("receipt_key.create", "rk_1", "system")
        ]
    );
}

#[tokio::test]
async fn master_key_rotation_rewraps_the_receipt_and_token_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let control_plane = |ring: Arc<Keyring>| {
        ControlPlane::new(
            store.clone(),
            ring,
            Arc::new(Publisher::new(
                Arc::new(memtrace_common::bus::memory::MemoryBus::new()),
                StateKeys::default(),
                Arc::new(memtrace_common::fleet::ephemeral_keyring()),
            )),
            Duration::from_secs(1),
        )
    };
    let before = control_plane(keyring(1, &[]));
    let signed = before.receipt_signer().sign(receipt()).await.unwrap();
    let token_key = before.token_keys().ensure_key().await.unwrap();
    let rotated = control_plane(keyring(2, &[1]));
    let status = rotated.keyring_status().await.unwrap();
    assert!(
        status.iter().any(|s| !s.active && s.records == 2),
        "one receipt key, one token key: {status:?}"
    );
    let report = rotated.rotate_master(&AdminActor::system()).await.unwrap();
    assert_eq!(report.rewrapped, 2);
    // the old master key retired: the same key still signs
    let after = control_plane(keyring(2, &[]));
    let again = after.receipt_signer().sign(receipt()).await.unwrap();
    assert_eq!(again.signature.public_key, signed.signature.public_key);
    let token_keys = after.token_keys().public_keys().await.unwrap();
    assert_eq!(
        token_keys,
        [token_key],
        "the token key opens under the new master key"
    );
}
