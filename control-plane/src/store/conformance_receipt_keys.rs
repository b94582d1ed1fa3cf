//! The receipt-key part of the store conformance suite: versions are added
//! one above the highest only, older versions are retired (never removed),
//! replicas adding "the same" version at once store exactly one, each
//! addition commits with its audit entry, and the envelope is swapped by
//! compare-and-swap only. Checks read the highest version first, so the
//! suite can run twice on one database.

use super::conformance::AUDIT_KEY;
use super::conformance_config::join_all;
use super::{AuditFilter, AuditRecord, AuditWith, ReceiptKeyRow, Store, StoreResult};
use std::future::Future;
use std::pin::Pin;

fn row(version: i64, tag: u8) -> ReceiptKeyRow {
    let mut public_key = rand_bytes();
    public_key[0] = tag;
    ReceiptKeyRow {
        version,
        key_id: format!("rk_{version}"),
        public_key: public_key.to_vec(),
        private_envelope: rand_bytes().to_vec(),
        created_at: 1_700_000_000_000 + version,
        retired_at: None,
    }
}

fn rand_bytes() -> [u8; 32] {
    let mut out = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut out);
    out
}

fn record(row: &ReceiptKeyRow) -> AuditRecord {
    AuditRecord {
        at_ms: 1_700_000_000_000,
        actor: "fp-conformance".into(),
        action: "receipt_key.create".into(),
        target: format!("{}:{}", row.key_id, hex::encode(&row.public_key[..8])),
        outcome: "ok".into(),
        details_json: "{}".into(),
    }
}

async fn insert(store: &dyn Store, row: &ReceiptKeyRow) -> bool {
    store
        .insert_receipt_key(row, AuditWith::new(&AUDIT_KEY, &record))
        .await
        .expect("receipt keys: insert")
}

async fn list(store: &dyn Store) -> Vec<ReceiptKeyRow> {
    store.list_receipt_keys().await.expect("receipt keys: list")
}

async fn audited(store: &dyn Store, row: &ReceiptKeyRow) -> usize {
    store
        .list_audit(&AuditFilter {
            key: Some(record(row).target),
            limit: 10,
            ..AuditFilter::default()
        })
        .await
        .expect("receipt keys: audit")
        .len()
}

/// Adding versions, retiring, racing, auditing, swapping envelopes.
pub async fn receipt_keys(store: &dyn Store) {
    let highest = list(store).await.last().map_or(0, |r| r.version);

    // only the next version is accepted
    let skipped = row(highest + 2, 1);
    assert!(!insert(store, &skipped).await, "receipt keys: a gap");
    assert_eq!(
        audited(store, &skipped).await,
        0,
        "receipt keys: gap audited"
    );
    let next = row(highest + 1, 2);
    assert!(insert(store, &next).await, "receipt keys: next version");
    assert_eq!(audited(store, &next).await, 1, "receipt keys: audited once");
    let keys = list(store).await;
    assert_eq!(keys.last(), Some(&next), "receipt keys: round trip");
    assert!(
        keys.windows(2).all(|w| w[0].version < w[1].version),
        "receipt keys: oldest first"
    );
    assert!(
        keys[..keys.len() - 1]
            .iter()
            .all(|k| k.retired_at.is_some()),
        "receipt keys: older versions retired"
    );
    let taken = row(highest + 1, 3);
    assert!(!insert(store, &taken).await, "receipt keys: version taken");
    assert_eq!(list(store).await.last(), Some(&next));

    // replicas adding the same next version at once: exactly one stored
    const N: usize = 6;
    let rows: Vec<ReceiptKeyRow> = (0..N).map(|i| row(highest + 2, 10 + i as u8)).collect();
    let racers = rows
        .iter()
        .map(|r| {
            Box::pin(async move {
                store
                    .insert_receipt_key(r, AuditWith::new(&AUDIT_KEY, &record))
                    .await
            }) as Pin<Box<dyn Future<Output = StoreResult<bool>> + Send + '_>>
        })
        .collect();
    let results: Vec<bool> = join_all(racers)
        .await
        .into_iter()
        .map(|r| r.expect("receipt keys: racing insert"))
        .collect();
    assert_eq!(
        results.iter().filter(|won| **won).count(),
        1,
        "receipt keys: one winner of {N}"
    );
    let winner = &rows[results.iter().position(|won| *won).expect("a winner")];
    let keys = list(store).await;
    assert_eq!(keys.last(), Some(winner), "receipt keys: the winner stored");
    assert_eq!(
        keys.iter().filter(|k| k.version == highest + 2).count(),
        1,
        "receipt keys: one row per version"
    );
    for (r, won) in rows.iter().zip(&results) {
        assert_eq!(
            audited(store, r).await,
            usize::from(*won),
            "receipt keys: only the winner audited"
        );
    }
    let retired = keys
        .iter()
        .find(|k| k.version == highest + 1)
        .expect("kept");
    assert_eq!(
        retired.retired_at,
        Some(winner.created_at),
        "receipt keys: retired by the next version, not removed"
    );

    // envelopes change by compare-and-swap only
    let new_envelope = rand_bytes().to_vec();
    assert!(
        !store
            .swap_receipt_key_envelope(winner.version, b"not the envelope", &new_envelope)
            .await
            .expect("receipt keys: swap"),
        "receipt keys: swap with a stale envelope"
    );
    assert!(
        store
            .swap_receipt_key_envelope(winner.version, &winner.private_envelope, &new_envelope)
            .await
            .expect("receipt keys: swap"),
        "receipt keys: swap"
    );
    let swapped = list(store).await.pop().expect("a key");
    assert_eq!(swapped.private_envelope, new_envelope);
    assert_eq!(
        swapped.public_key, winner.public_key,
        "receipt keys: only the envelope"
    );
}
