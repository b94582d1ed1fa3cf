//! The erasure-job part of the store conformance suite: idempotent
//! insertion, listing by org and state, due jobs, claims that two replicas
//! cannot hold at once, progress written only by the claim's holder, and
//! org deletion pinning the org's Arc binding into its erasure jobs.

use super::conformance::audited;
use super::{ArcBindingRow, ErasureFilter, ErasureJobRow, OrgRow, Store};
use memtrace_common::ids::new_id;

/// A fresh job of `org_id` in state `requested`, due at `due`.
pub fn job(org_id: &str, due: i64) -> ErasureJobRow {
    ErasureJobRow {
        id: new_id("era"),
        org_id: org_id.to_owned(),
        scope_json: r#"{"memory_ids":["mem_1"]}"#.into(),
        memory_predicate: "id IN ('mem_1')".into(),
        store: "arc".into(),
        as_of_micros: 1_700_000_000_000_000,
        requested_by: "api_key:key_1".into(),
        requested_at_micros: due * 1000,
        state: "requested".into(),
        detail: String::new(),
        attempts: 0,
        next_attempt_at: due,
        claimed_by: None,
        claimed_until: None,
        target_json: None,
        pinned: None,
        rows_removed_json: None,
        verification_json: None,
        receipt_json: None,
        created_at: due,
        started_at: None,
        finished_at: None,
    }
}

/// Insert (idempotent), get, list by org and state, due, claim and save.
pub async fn erasure_jobs(store: &dyn Store) {
    let org = new_id("org");
    let a = job(&org, 100);
    assert!(
        store.insert_erasure(&a).await.expect("erasures: insert"),
        "erasures: a new job is inserted"
    );
    let changed = ErasureJobRow {
        state: "blocked".into(),
        detail: "other".into(),
        ..a.clone()
    };
    assert!(
        !store
            .insert_erasure(&changed)
            .await
            .expect("erasures: again"),
        "erasures: re-adopting an id inserts nothing"
    );
    let got = store
        .get_erasure(&a.id)
        .await
        .expect("erasures: get")
        .expect("erasures: found");
    assert_eq!(got, a, "erasures: round trip, unchanged by the re-insert");
    assert!(
        store
            .get_erasure("era_missing")
            .await
            .expect("erasures: get missing")
            .is_none()
    );

    let b = job(&org, 200);
    store.insert_erasure(&b).await.expect("erasures: insert b");
    let other = job(&new_id("org"), 150);
    store.insert_erasure(&other).await.expect("erasures: other");
    let of_org = store
        .list_erasures(&ErasureFilter {
            org_id: Some(org.clone()),
            state: None,
        })
        .await
        .expect("erasures: list");
    let ids: Vec<&str> = of_org.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(
        ids,
        [b.id.as_str(), a.id.as_str()],
        "erasures: newest first"
    );
    let all = store
        .list_erasures(&ErasureFilter::default())
        .await
        .expect("erasures: list all");
    assert!(all.iter().any(|j| j.id == other.id), "erasures: every org");

    // due: only those whose time has come, unclaimed
    let due = store.due_erasures(150, 1000).await.expect("erasures: due");
    assert!(due.iter().any(|j| j.id == a.id), "erasures: a is due");
    assert!(!due.iter().any(|j| j.id == b.id), "erasures: b is not due");

    // claims: one holder at a time, until it expires
    let claimed = store
        .claim_erasure(&a.id, "cp-1", 150, 1150)
        .await
        .expect("erasures: claim")
        .expect("erasures: claimed");
    assert_eq!(claimed.claimed_by.as_deref(), Some("cp-1"));
    assert_eq!(claimed.claimed_until, Some(1150));
    assert!(
        store
            .claim_erasure(&a.id, "cp-2", 500, 1500)
            .await
            .expect("erasures: claim 2")
            .is_none(),
        "erasures: a live claim refuses another replica"
    );
    let due = store.due_erasures(500, 1000).await.expect("erasures: due");
    assert!(
        !due.iter().any(|j| j.id == a.id),
        "erasures: claimed is not due"
    );
    // two replicas racing for the same expired claim: one wins
    let (x, y) = tokio::join!(
        store.claim_erasure(&a.id, "cp-2", 2000, 3000),
        store.claim_erasure(&a.id, "cp-3", 2000, 3000)
    );
    let winners = [x.expect("claim x"), y.expect("claim y")]
        .into_iter()
        .flatten()
        .count();
    assert_eq!(winners, 1, "erasures: exactly one replica claims");
    let holder = store
        .get_erasure(&a.id)
        .await
        .expect("erasures: get")
        .expect("found")
        .claimed_by
        .expect("held");

    // progress: only the holder writes
    let mut progress = claimed.clone();
    progress.state = "done".into();
    progress.attempts = 1;
    progress.rows_removed_json = Some(r#"{"memories":2}"#.into());
    progress.verification_json = Some(r#"{"memories":{"remaining":0}}"#.into());
    progress.receipt_json = Some(r#"{"erasure_id":"x"}"#.into());
    progress.target_json = Some(r#"{"host":"arc"}"#.into());
    progress.started_at = Some(2100);
    progress.finished_at = Some(2200);
    progress.claimed_by = None;
    progress.claimed_until = None;
    assert!(
        !store.save_erasure(&progress, "cp-9").await.expect("save"),
        "erasures: a non-holder writes nothing"
    );
    assert!(
        store.save_erasure(&progress, &holder).await.expect("save"),
        "erasures: the holder writes"
    );
    let saved = store
        .get_erasure(&a.id)
        .await
        .expect("erasures: get")
        .expect("found");
    assert_eq!(saved, progress, "erasures: progress round trip");
    let done = store
        .list_erasures(&ErasureFilter {
            org_id: Some(org.clone()),
            state: Some("done".into()),
        })
        .await
        .expect("erasures: list done");
    assert_eq!(done.len(), 1, "erasures: by state");
    assert!(
        store
            .claim_erasure(&a.id, "cp-1", 10_000, 11_000)
            .await
            .expect("claim done")
            .is_none(),
        "erasures: a done job is not claimed"
    );
    let due = store.due_erasures(i64::MAX, 1000).await.expect("due");
    assert!(
        !due.iter().any(|j| j.id == a.id),
        "erasures: done is not due"
    );
    // a sweep's one-at-a-time check: b (not done) is unfinished, a is done
    let by = b.requested_by.clone();
    assert!(
        store
            .has_unfinished_erasure(&org, &by)
            .await
            .expect("erasures: unfinished"),
        "erasures: b is unfinished"
    );
    assert!(
        !store
            .has_unfinished_erasure(&org, "system:nobody")
            .await
            .expect("erasures: unfinished of another actor"),
        "erasures: only the actor's jobs count"
    );
    assert!(
        !store
            .has_unfinished_erasure(&new_id("org"), &by)
            .await
            .expect("erasures: unfinished of another org"),
        "erasures: only the org's jobs count"
    );
    let counts = store.count_erasures().await.expect("erasures: count");
    let of = |state: &str| {
        counts
            .iter()
            .find(|(s, _)| s == state)
            .map_or(0, |(_, n)| *n)
    };
    assert!(
        of("done") >= 1 && of("requested") >= 2,
        "erasures: counts {counts:?}"
    );
}

/// Deleting an org with an erasure job inserts the job with the org's
/// binding pinned (and pins it into the org's unfinished jobs) in the
/// deletion's transaction.
pub async fn org_deletion_pins_erasures(store: &dyn Store) {
    let org = OrgRow {
        id: new_id("org"),
        name: format!("erased-{}", new_id("n")),
        created_at: 1,
    };
    store.insert_org(&org, audited()).await.expect("org");
    let binding = ArcBindingRow {
        id: new_id("arc"),
        org_id: org.id.clone(),
        url: "http://127.0.0.1:8000".into(),
        database: "tenant_db".into(),
        measurement: "events".into(),
        api_key_envelope: Some(vec![1, 2, 3]),
        created_at: 1,
        updated_at: 1,
    };
    store
        .put_arc_binding(&binding, false, audited())
        .await
        .expect("binding");
    let pending = job(&org.id, 10);
    store.insert_erasure(&pending).await.expect("pending");
    // running on a replica while the org is deleted
    let running = store
        .claim_erasure(&pending.id, "cp-p", 10, 1_000_000)
        .await
        .expect("claim")
        .expect("claimed");
    let mut whole = job(&org.id, 20);
    whole.scope_json = r#"{"whole_org":true}"#.into();
    whole.memory_predicate = String::new();
    store
        .delete_org(&org.id, 30, Some(&whole), audited())
        .await
        .expect("delete")
        .expect("deleted");
    assert!(
        store
            .get_arc_binding(&org.id)
            .await
            .expect("binding")
            .is_none()
    );
    for id in [&whole.id, &pending.id] {
        let got = store
            .get_erasure(id)
            .await
            .expect("erasures: get")
            .expect("erasures: kept after the org");
        let pinned = got.pinned.expect("erasures: binding pinned");
        assert_eq!(pinned.binding_id, binding.id);
        assert_eq!(pinned.url, binding.url);
        assert_eq!(pinned.database, binding.database);
        assert_eq!(pinned.measurement, binding.measurement);
        assert_eq!(pinned.api_key_envelope, binding.api_key_envelope);
    }
    // the running replica's saves neither undo the pin nor a rewrap
    let mut progress = running.clone();
    progress.state = "running".into();
    progress.attempts = 1;
    assert!(store.save_erasure(&progress, "cp-p").await.expect("save"));
    let kept = store
        .get_erasure(&pending.id)
        .await
        .expect("get")
        .expect("found");
    assert_eq!(
        kept.pinned.as_ref().map(|p| p.binding_id.as_str()),
        Some(binding.id.as_str()),
        "erasures: a save keeps the pin"
    );
    assert!(
        !store
            .swap_erasure_envelope(&pending.id, &[9, 9], &[4, 5, 6])
            .await
            .expect("swap"),
        "erasures: a swap from another envelope writes nothing"
    );
    assert!(
        store
            .swap_erasure_envelope(&pending.id, &[1, 2, 3], &[4, 5, 6])
            .await
            .expect("swap"),
        "erasures: the rewrap swaps"
    );
    assert!(store.save_erasure(&progress, "cp-p").await.expect("save"));
    let kept = store
        .get_erasure(&pending.id)
        .await
        .expect("get")
        .expect("found");
    assert_eq!(
        kept.pinned.and_then(|p| p.api_key_envelope),
        Some(vec![4, 5, 6]),
        "erasures: a save keeps the rewrapped key"
    );
    progress.state = "done".into();
    assert!(store.save_erasure(&progress, "cp-p").await.expect("save"));
    let done = store
        .get_erasure(&pending.id)
        .await
        .expect("get")
        .expect("found");
    assert!(done.pinned.is_none(), "erasures: done drops the sealed key");

    // an org without a binding: the job is inserted without a target
    let bare = OrgRow {
        id: new_id("org"),
        name: format!("bare-{}", new_id("n")),
        created_at: 1,
    };
    store.insert_org(&bare, audited()).await.expect("org");
    let job_bare = job(&bare.id, 5);
    store
        .delete_org(&bare.id, 30, Some(&job_bare), audited())
        .await
        .expect("delete")
        .expect("deleted");
    let got = store
        .get_erasure(&job_bare.id)
        .await
        .expect("get")
        .expect("inserted");
    assert!(got.pinned.is_none());
}
