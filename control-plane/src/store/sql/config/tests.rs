use super::*;
use crate::store::{ChainBreak, ChainVerifier, Store, UNKEYED_VERSION};
use memtrace_common::envelope::{Keyring, MasterKey};

fn record(n: usize) -> AuditRecord {
    AuditRecord {
        at_ms: 1_700_000_000_000,
        actor: "fp-test".into(),
        action: "config.set".into(),
        target: format!("k{n}"),
        outcome: "ok".into(),
        details_json: format!(r#"{{"n":{n}}}"#),
    }
}

fn keys() -> Keyring {
    Keyring::new(MasterKey::new(&[3; 32]), Vec::new())
}

async fn store(dir: &tempfile::TempDir, name: &str) -> SqlStore {
    let url = SqlStore::sqlite_url(dir.path().join(name).to_str().expect("utf-8"));
    let store = SqlStore::connect(&url).await.expect("connect");
    store.migrate().await.expect("migrate");
    store
}

async fn verify(store: &SqlStore, keys: &Keyring) -> Result<u64, ChainBreak> {
    let mut verifier = ChainVerifier::new(keys);
    for entry in store.audit_range(0, 10_000).await.expect("range") {
        verifier.push(&entry)?;
    }
    verifier.finish(&store.audit_head().await.expect("head"))
}

/// Tampering with a row through SQL (after dropping the append-only
/// trigger, as an attacker with database access could) is found and the
/// broken entry named.
#[tokio::test]
async fn tampering_through_sql_is_detected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = keys();
    let store = store(&dir, "cp.db").await;
    for n in 0..5 {
        store
            .append_audit(&record(n), &keys.audit_key())
            .await
            .expect("append");
    }
    assert_eq!(verify(&store, &keys).await, Ok(5));

    let refused = store
        .execute_raw_for_tests("UPDATE audit_log SET outcome = 'denied' WHERE seq = 3")
        .await;
    assert!(refused.is_err(), "the trigger keeps the log append-only");
    let refused = store
        .execute_raw_for_tests("DELETE FROM audit_log WHERE seq = 5")
        .await;
    assert!(refused.is_err(), "the trigger keeps the log append-only");

    store
        .execute_raw_for_tests(
            "DROP TRIGGER audit_log_no_update; \
             UPDATE audit_log SET details_json = '{\"n\":99}' WHERE seq = 3",
        )
        .await
        .expect("tamper");
    let broken = verify(&store, &keys).await.expect_err("tampering found");
    assert_eq!(broken.seq, 3, "{broken}");
    assert!(broken.to_string().contains("entry 3"), "{broken}");

    // removing the newest entries is found through the head
    let store = self::store(&dir, "cp2.db").await;
    for n in 0..3 {
        store
            .append_audit(&record(n), &keys.audit_key())
            .await
            .expect("append");
    }
    store
        .execute_raw_for_tests(
            "DROP TRIGGER audit_log_no_delete; DELETE FROM audit_log WHERE seq = 3",
        )
        .await
        .expect("truncate");
    let broken = verify(&store, &keys).await.expect_err("truncation found");
    assert_eq!(broken.seq, 3, "{broken}");
}

/// The forgery the unkeyed chain could not see: rewrite entry 3, recompute
/// the plain SHA-256 chain from there and the head, all through SQL. Found
/// at entry 3, whether the rows keep their keyed labels or claim to be
/// unkeyed.
#[tokio::test]
async fn a_recomputed_sha256_chain_is_found_at_the_first_forged_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = keys();
    for relabel in [false, true] {
        let store = store(&dir, &format!("forged-{relabel}.db")).await;
        for n in 0..5 {
            store
                .append_audit(&record(n), &keys.audit_key())
                .await
                .expect("append");
        }
        let mut entries = store.audit_range(0, 100).await.expect("range");
        entries[2].outcome = "denied".into();
        let mut prev = entries[1].hash.clone();
        for entry in &mut entries[2..] {
            entry.prev_hash = prev;
            if relabel {
                entry.version = UNKEYED_VERSION;
                entry.kek_id = None;
            }
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
            .overwrite_audit_for_tests(&entries[2..], &head)
            .await
            .expect("forge");
        let broken = verify(&store, &keys).await.expect_err("forgery found");
        assert_eq!(broken.seq, 3, "relabelled {relabel}: {broken}");
    }
}

/// A database from before the keyed chain: its unkeyed entries verify with
/// the unkeyed rule, new entries are keyed and continue the chain, and the
/// keyed entries cover the unkeyed prefix.
#[tokio::test]
async fn unkeyed_entries_of_an_old_database_verify_and_the_chain_continues() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = keys();
    let store = store(&dir, "old.db").await;
    let old: Vec<AuditRecord> = (0..3).map(record).collect();
    let unkeyed = store.append_unkeyed_for_tests(&old).await.expect("old");
    assert!(unkeyed.iter().all(|e| e.kek_id.is_none()));
    assert_eq!(verify(&store, &keys).await, Ok(3));
    let keyed = store
        .append_audit(&record(3), &keys.audit_key())
        .await
        .expect("append");
    assert_eq!(keyed.prev_hash, unkeyed[2].hash, "one chain");
    assert_eq!(keyed.kek_id, Some(keys.active_kek_id()));
    let head = store.audit_head().await.expect("head");
    assert_eq!(head.kek_id, Some(keys.active_kek_id()));
    assert_eq!(verify(&store, &keys).await, Ok(4));

    // rewriting an unkeyed entry consistently up to the boundary breaks the
    // first keyed entry's link
    let mut entries = store.audit_range(0, 100).await.expect("range");
    entries[1].target = "forged".into();
    entries[1].hash = entries[1].unkeyed_hash().to_vec();
    entries[2].prev_hash = entries[1].hash.clone();
    entries[2].hash = entries[2].unkeyed_hash().to_vec();
    store
        .overwrite_audit_for_tests(&entries[1..3], &head)
        .await
        .expect("forge");
    assert_eq!(verify(&store, &keys).await.expect_err("found").seq, 4);
}

#[test]
fn like_patterns_are_escaped() {
    assert_eq!(
        like_escape("arc.write_batch_size"),
        "arc.write\\_batch\\_size"
    );
    assert_eq!(like_escape("100%\\"), "100\\%\\\\");
}
