//! Conformance checks of the runtime settings and the audit trail, part of
//! [`super::conformance::run_all`]. Keys, orgs and markers are random, so the
//! checks can share a database with each other and with a second run.

use super::conformance::{AUDIT_KEY, KEYS};
use super::{
    AuditFilter, AuditRecord, ChainVerifier, SettingChange, Store, StoreError, StoreResult,
};
use memtrace_common::ids::new_id;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

fn change(key: &str, org: &str, expected: Option<&str>, new: Option<&str>) -> SettingChange {
    SettingChange {
        key: key.to_owned(),
        org_id: org.to_owned(),
        expected: expected.map(str::to_owned),
        new: new.map(str::to_owned),
        at_ms: 1_700_000_000_000,
    }
}

fn record(action: &str, target: &str, outcome: &str) -> AuditRecord {
    AuditRecord {
        at_ms: 1_700_000_000_000,
        actor: "fp-conformance".into(),
        action: action.into(),
        target: target.into(),
        outcome: outcome.into(),
        details_json: r#"{"check":"conformance"}"#.into(),
    }
}

/// Polls every future to completion concurrently on the current task.
pub(super) async fn join_all<T>(
    mut futures: Vec<Pin<Box<dyn Future<Output = T> + Send + '_>>>,
) -> Vec<T> {
    let mut results: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, result) in futures.iter_mut().zip(results.iter_mut()) {
            if result.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *result = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    results.into_iter().flatten().collect()
}

/// Verifies the whole stored chain under [`KEYS`].
pub async fn verify_whole_chain(store: &dyn Store) -> u64 {
    let mut verifier = ChainVerifier::new(&KEYS);
    let mut after = 0;
    loop {
        let page = store.audit_range(after, 500).await.expect("audit: range");
        let Some(last) = page.last() else { break };
        after = last.seq;
        for entry in &page {
            verifier.push(entry).expect("audit: the chain verifies");
        }
    }
    let head = store.audit_head().await.expect("audit: head");
    verifier
        .finish(&head)
        .expect("audit: the chain ends at its head")
}

/// Settings: compare-and-swap writes, global and per-org rows, deletes, and
/// a refused change writes nothing (neither the value nor its audit entry).
pub async fn settings_compare_and_swap(store: &dyn Store) {
    let key = new_id("setting");
    let org = new_id("org");
    assert_eq!(
        store
            .get_setting(&key, "")
            .await
            .expect("settings: get missing"),
        None
    );
    let entries = store
        .apply_setting_changes(
            &[
                change(&key, "", None, Some("5")),
                change(&key, &org, None, Some("7")),
            ],
            &[
                record("config.set", &key, "ok"),
                record("config.set", &format!("{org}/{key}"), "ok"),
            ],
            &AUDIT_KEY,
        )
        .await
        .expect("settings: first write");
    assert_eq!(entries.len(), 2);
    assert_eq!(
        entries[1].seq,
        entries[0].seq + 1,
        "settings: entries are chained in order"
    );
    assert_eq!(entries[1].prev_hash, entries[0].hash);
    let global = store
        .get_setting(&key, "")
        .await
        .expect("settings: get")
        .expect("settings: stored");
    assert_eq!(
        (global.value_json.as_str(), global.updated_at),
        ("5", 1_700_000_000_000)
    );
    let per_org = store
        .get_setting(&key, &org)
        .await
        .expect("settings: get org")
        .expect("stored");
    assert_eq!(per_org.value_json, "7");

    let head = store.audit_head().await.expect("settings: head");
    let stale = store
        .apply_setting_changes(
            &[
                change(&key, &org, Some("7"), Some("8")),
                change(&key, "", Some("4"), Some("6")),
            ],
            &[record("config.import", &key, "ok")],
            &AUDIT_KEY,
        )
        .await;
    assert!(
        matches!(stale, Err(StoreError::Conflict(_))),
        "settings: a stale expected value conflicts"
    );
    assert_eq!(
        store
            .get_setting(&key, &org)
            .await
            .expect("settings: get")
            .map(|r| r.value_json),
        Some("7".to_owned()),
        "settings: a refused batch changes nothing"
    );
    assert_eq!(
        store.audit_head().await.expect("settings: head"),
        head,
        "settings: and appends nothing"
    );

    store
        .apply_setting_changes(&[change(&key, "", Some("5"), None)], &[], &AUDIT_KEY)
        .await
        .expect("settings: delete");
    assert_eq!(
        store.get_setting(&key, "").await.expect("settings: get"),
        None
    );
    let listed = store.list_settings().await.expect("settings: list");
    assert!(
        listed.iter().any(|r| r.key == key && r.org_id == org),
        "settings: list has the override"
    );
    assert!(
        !listed.iter().any(|r| r.key == key && r.org_id.is_empty()),
        "settings: deleted row gone"
    );

    let removed = store
        .delete_org_settings(&org)
        .await
        .expect("settings: delete org");
    assert_eq!(removed.len(), 1);
    assert_eq!(
        store.get_setting(&key, &org).await.expect("settings: get"),
        None
    );
    assert!(
        store
            .delete_org_settings(&org)
            .await
            .expect("settings: again")
            .is_empty()
    );
}

/// Seeding happens once per marker; a second call writes nothing.
pub async fn seeding_happens_once(store: &dyn Store) {
    let marker = new_id("seeded");
    let key = new_id("setting");
    let first = store
        .seed_settings(
            &marker,
            &[change(&key, "", None, Some("1"))],
            &[record("config.seed", &key, "ok")],
            &AUDIT_KEY,
        )
        .await
        .expect("seed: first");
    assert!(first, "seed: the first call seeds");
    assert!(
        store
            .meta_get(&marker)
            .await
            .expect("seed: marker")
            .is_some()
    );
    let head = store.audit_head().await.expect("seed: head");
    let second = store
        .seed_settings(
            &marker,
            &[change(&key, "", Some("1"), Some("2"))],
            &[record("config.seed", &key, "ok")],
            &AUDIT_KEY,
        )
        .await
        .expect("seed: second");
    assert!(!second, "seed: never twice");
    assert_eq!(
        store
            .get_setting(&key, "")
            .await
            .expect("seed: get")
            .map(|r| r.value_json),
        Some("1".into())
    );
    assert_eq!(store.audit_head().await.expect("seed: head"), head);
}

/// The audit trail: append, get, filters, paging, range and head.
pub async fn audit_trail(store: &dyn Store) {
    let org = new_id("org");
    let key = format!("{}.x_y", new_id("k"));
    let a = store
        .append_audit(&record("config.set", &key, "ok"), &AUDIT_KEY)
        .await
        .expect("audit: append");
    let b = store
        .append_audit(
            &record("config.set", &format!("{org}/{key}"), "denied"),
            &AUDIT_KEY,
        )
        .await
        .expect("audit: append");
    let c = store
        .append_audit(&record("org.create", &org, "ok"), &AUDIT_KEY)
        .await
        .expect("audit: append");
    assert_eq!((b.seq, c.seq), (a.seq + 1, a.seq + 2));
    assert_eq!(
        store.get_audit(b.seq).await.expect("audit: get"),
        Some(b.clone())
    );
    assert_eq!(
        store.get_audit(i64::MAX).await.expect("audit: get missing"),
        None
    );
    let head = store.audit_head().await.expect("audit: head");
    assert!(head.seq >= c.seq);

    let list =
        |filter: AuditFilter| async move { store.list_audit(&filter).await.expect("audit: list") };
    let seqs = |entries: Vec<super::AuditEntry>| entries.iter().map(|e| e.seq).collect::<Vec<_>>();
    let by_key = list(AuditFilter {
        key: Some(key.clone()),
        limit: 10,
        ..AuditFilter::default()
    })
    .await;
    assert_eq!(
        seqs(by_key),
        vec![b.seq, a.seq],
        "audit: a key matches global and per-org targets, newest first"
    );
    let by_org = list(AuditFilter {
        org_id: Some(org.clone()),
        limit: 10,
        ..AuditFilter::default()
    })
    .await;
    assert_eq!(
        seqs(by_org),
        vec![c.seq, b.seq],
        "audit: an org matches itself and its settings"
    );
    let denied = list(AuditFilter {
        org_id: Some(org.clone()),
        outcome: Some("denied".into()),
        action_prefix: Some("config.".into()),
        limit: 10,
        ..AuditFilter::default()
    })
    .await;
    assert_eq!(seqs(denied), vec![b.seq]);
    let wildcard = list(AuditFilter {
        key: Some(key.replace('_', "%")),
        limit: 10,
        ..AuditFilter::default()
    })
    .await;
    assert!(
        wildcard.is_empty(),
        "audit: filters are literal, not LIKE patterns"
    );
    let paged = list(AuditFilter {
        org_id: Some(org.clone()),
        before_seq: Some(c.seq),
        limit: 1,
        ..AuditFilter::default()
    })
    .await;
    assert_eq!(seqs(paged), vec![b.seq], "audit: before_seq and limit page");
    let range = store.audit_range(a.seq - 1, 2).await.expect("audit: range");
    assert_eq!(seqs(range), vec![a.seq, b.seq]);
    verify_whole_chain(store).await;
}

/// Many concurrent appends and compare-and-swap writes: the chain never
/// forks, sequence numbers stay contiguous, and exactly one of several
/// writers racing on the same expected value wins.
pub async fn concurrent_appends_never_fork(store: &dyn Store) {
    const N: usize = 24;
    let target = new_id("concurrent");
    let appends = (0..N)
        .map(|_| {
            let record = record("test.concurrent", &target, "ok");
            Box::pin(async move { store.append_audit(&record, &AUDIT_KEY).await })
                as Pin<Box<dyn Future<Output = StoreResult<super::AuditEntry>> + Send + '_>>
        })
        .collect();
    let entries: Vec<super::AuditEntry> = join_all(appends)
        .await
        .into_iter()
        .map(|r| r.expect("concurrent: append"))
        .collect();
    let mut seqs: Vec<i64> = entries.iter().map(|e| e.seq).collect();
    seqs.sort_unstable();
    let first = seqs[0];
    assert_eq!(
        seqs,
        (first..first + N as i64).collect::<Vec<_>>(),
        "concurrent: contiguous, no duplicates"
    );
    verify_whole_chain(store).await;

    let key = new_id("race");
    let writers = (0..8)
        .map(|i| {
            let change = change(&key, "", None, Some(&i.to_string()));
            let audit = record("config.set", &key, "ok");
            Box::pin(async move {
                store
                    .apply_setting_changes(&[change], &[audit], &AUDIT_KEY)
                    .await
            })
                as Pin<Box<dyn Future<Output = StoreResult<Vec<super::AuditEntry>>> + Send + '_>>
        })
        .collect();
    let results = join_all(writers).await;
    let won = results.iter().filter(|r| r.is_ok()).count();
    let conflicts = results
        .iter()
        .filter(|r| matches!(r, Err(StoreError::Conflict(_))))
        .count();
    assert_eq!(
        (won, conflicts),
        (1, 7),
        "concurrent: one writer wins, the rest conflict: {results:?}"
    );
    verify_whole_chain(store).await;
}
