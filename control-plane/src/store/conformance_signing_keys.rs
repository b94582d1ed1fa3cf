//! The signing-key part of the store conformance suite, for each
//! [`KeyFamily`] (receipt keys, token keys): versions are added
//! one above the highest only, older versions are retired (never removed),
//! replicas adding "the same" version at once store exactly one, each
//! addition commits with its audit entry, and the envelope is swapped by
//! compare-and-swap only. Checks read the highest version first, so the
//! suite can run twice on one database.

use super::conformance::AUDIT_KEY;
use super::conformance_config::join_all;
use super::{AuditFilter, AuditRecord, AuditWith, KeyFamily, SigningKeyRow, Store, StoreResult};
use std::future::Future;
use std::pin::Pin;

fn row(version: i64, tag: u8) -> SigningKeyRow {
    let mut public_key = rand_bytes();
    public_key[0] = tag;
    SigningKeyRow {
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

fn record(row: &SigningKeyRow) -> AuditRecord {
    AuditRecord {
        at_ms: 1_700_000_000_000,
        actor: "fp-conformance".into(),
        action: "receipt_key.create".into(),
        target: format!("{}:{}", row.key_id, hex::encode(&row.public_key[..8])),
        outcome: "ok".into(),
        details_json: "{}".into(),
    }
}

async fn insert(store: &dyn Store, family: KeyFamily, row: &SigningKeyRow) -> bool {
    store
        .insert_signing_key(family, row, AuditWith::new(&AUDIT_KEY, &record))
        .await
        .expect("signing keys: insert")
}

async fn list(store: &dyn Store, family: KeyFamily) -> Vec<SigningKeyRow> {
    store
        .list_signing_keys(family)
        .await
        .expect("signing keys: list")
}

async fn audited(store: &dyn Store, row: &SigningKeyRow) -> usize {
    store
        .list_audit(&AuditFilter {
            key: Some(record(row).target),
            limit: 10,
            ..AuditFilter::default()
        })
        .await
        .expect("signing keys: audit")
        .len()
}

/// Adding versions, retiring, racing, auditing, swapping envelopes: for
/// receipt keys, then token keys (one family's versions never move the
/// other's).
pub async fn signing_keys(store: &dyn Store) {
    let tokens_before = list(store, KeyFamily::Token).await;
    family_keys(store, KeyFamily::Receipt).await;
    assert_eq!(
        list(store, KeyFamily::Token).await,
        tokens_before,
        "signing keys: receipt keys leave token keys alone"
    );
    family_keys(store, KeyFamily::Token).await;
}

async fn family_keys(store: &dyn Store, family: KeyFamily) {
    let highest = list(store, family).await.last().map_or(0, |r| r.version);

    // only the next version is accepted
    let skipped = row(highest + 2, 1);
    assert!(
        !insert(store, family, &skipped).await,
        "signing keys: a gap"
    );
    assert_eq!(
        audited(store, &skipped).await,
        0,
        "signing keys: gap audited"
    );
    let next = row(highest + 1, 2);
    assert!(
        insert(store, family, &next).await,
        "signing keys: next version"
    );
    assert_eq!(audited(store, &next).await, 1, "signing keys: audited once");
    let keys = list(store, family).await;
    assert_eq!(keys.last(), Some(&next), "signing keys: round trip");
    assert!(
        keys.windows(2).all(|w| w[0].version < w[1].version),
        "signing keys: oldest first"
    );
    assert!(
        keys[..keys.len() - 1]
            .iter()
            .all(|k| k.retired_at.is_some()),
        "signing keys: older versions retired"
    );
    let taken = row(highest + 1, 3);
    assert!(
        !insert(store, family, &taken).await,
        "signing keys: version taken"
    );
    assert_eq!(list(store, family).await.last(), Some(&next));

    // replicas adding the same next version at once: exactly one stored
    const N: usize = 6;
    let rows: Vec<SigningKeyRow> = (0..N).map(|i| row(highest + 2, 10 + i as u8)).collect();
    let racers = rows
        .iter()
        .map(|r| {
            Box::pin(async move {
                store
                    .insert_signing_key(family, r, AuditWith::new(&AUDIT_KEY, &record))
                    .await
            }) as Pin<Box<dyn Future<Output = StoreResult<bool>> + Send + '_>>
        })
        .collect();
    let results: Vec<bool> = join_all(racers)
        .await
        .into_iter()
        .map(|r| r.expect("signing keys: racing insert"))
        .collect();
    assert_eq!(
        results.iter().filter(|won| **won).count(),
        1,
        "signing keys: one winner of {N}"
    );
    let winner = &rows[results.iter().position(|won| *won).expect("a winner")];
    let keys = list(store, family).await;
    assert_eq!(keys.last(), Some(winner), "signing keys: the winner stored");
    assert_eq!(
        keys.iter().filter(|k| k.version == highest + 2).count(),
        1,
        "signing keys: one row per version"
    );
    for (r, won) in rows.iter().zip(&results) {
        assert_eq!(
            audited(store, r).await,
            usize::from(*won),
            "signing keys: only the winner audited"
        );
    }
    let retired = keys
        .iter()
        .find(|k| k.version == highest + 1)
        .expect("kept");
    assert_eq!(
        retired.retired_at,
        Some(winner.created_at),
        "signing keys: retired by the next version, not removed"
    );

    // envelopes change by compare-and-swap only
    let new_envelope = rand_bytes().to_vec();
    assert!(
        !store
            .swap_signing_key_envelope(family, winner.version, b"not the envelope", &new_envelope)
            .await
            .expect("signing keys: swap"),
        "signing keys: swap with a stale envelope"
    );
    assert!(
        store
            .swap_signing_key_envelope(
                family,
                winner.version,
                &winner.private_envelope,
                &new_envelope
            )
            .await
            .expect("signing keys: swap"),
        "signing keys: swap"
    );
    let swapped = list(store, family).await.pop().expect("a key");
    assert_eq!(swapped.private_envelope, new_envelope);
    assert_eq!(
        swapped.public_key, winner.public_key,
        "signing keys: only the envelope"
    );
}
