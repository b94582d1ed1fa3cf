//! The admin-token part of the store conformance suite: unique ids and
//! hashes, last-use times that only rise, revocation that never leaves no
//! active admin-role token unless forced (also when two revoke at once), and
//! tokens stored before ids existed keeping working after the migration.

use super::conformance::audited;
use super::{AdminTokenRevocation, AdminTokenRow, SqlStore, Store, StoreError};
use crate::auth::AdminAuth;
use memtrace_common::credentials::{
    credential_fingerprint, hash_admin_token, legacy_admin_token_id, new_admin_token,
};

/// A fixed "now" for the expiry checks.
const NOW: i64 = 1_700_000_000_000;

fn token(role: &str) -> AdminTokenRow {
    let new = new_admin_token();
    AdminTokenRow {
        id: new.token_id,
        token_hash: new.hash.to_vec(),
        fingerprint: credential_fingerprint(&new.token),
        name: format!("{role}-token"),
        role: role.to_owned(),
        created_at: 10,
        expires_at: None,
        last_used_at: None,
        revoked_at: None,
    }
}

async fn insert(store: &dyn Store, row: &AdminTokenRow) {
    store
        .insert_admin_token(row, Some(audited()))
        .await
        .expect("admin tokens: insert");
}

async fn revoke(store: &dyn Store, id: &str, force: bool) -> AdminTokenRevocation {
    store
        .revoke_admin_token(id, NOW, force, audited())
        .await
        .expect("admin tokens: revoke")
}

fn revoked(result: &AdminTokenRevocation) -> bool {
    matches!(result, AdminTokenRevocation::Revoked(_))
}

/// Insert, get, list, uniqueness, last use and revocation rules.
pub async fn admin_tokens(store: &dyn Store) {
    let a = token("admin");
    insert(store, &a).await;
    let again = store.insert_admin_token(&a, None).await;
    assert!(
        matches!(again, Err(StoreError::Conflict(_))),
        "admin tokens: duplicate id"
    );
    let same_hash = AdminTokenRow {
        id: new_admin_token().token_id,
        ..a.clone()
    };
    let again = store.insert_admin_token(&same_hash, Some(audited())).await;
    assert!(
        matches!(again, Err(StoreError::Conflict(_))),
        "admin tokens: duplicate hash"
    );
    assert_eq!(
        store
            .get_admin_token(&a.id)
            .await
            .expect("admin tokens: get"),
        Some(a.clone()),
        "admin tokens: round trip"
    );
    assert!(
        store
            .list_admin_tokens()
            .await
            .expect("admin tokens: list")
            .contains(&a)
    );

    store
        .touch_admin_tokens(&[(a.id.clone(), 50)])
        .await
        .expect("admin tokens: touch");
    store
        .touch_admin_tokens(&[(a.id.clone(), 40)])
        .await
        .expect("admin tokens: touch older");
    store
        .touch_admin_tokens(&[])
        .await
        .expect("admin tokens: touch nothing");
    let touched = store
        .get_admin_token(&a.id)
        .await
        .expect("admin tokens: get");
    assert_eq!(
        touched.and_then(|t| t.last_used_at),
        Some(50),
        "admin tokens: last use only rises"
    );

    let reader = token("reader");
    insert(store, &reader).await;
    match revoke(store, &reader.id, false).await {
        AdminTokenRevocation::Revoked(row) => assert_eq!(row.revoked_at, Some(NOW)),
        other => panic!("admin tokens: a reader is revoked, got {other:?}"),
    }
    assert!(
        matches!(
            revoke(store, &reader.id, false).await,
            AdminTokenRevocation::AlreadyRevoked(_)
        ),
        "admin tokens: revoking twice changes nothing"
    );
    assert_eq!(
        revoke(store, "adm_0000000000000000", false).await,
        AdminTokenRevocation::NotFound
    );
    let reinsert = store.insert_admin_token(&reader, None).await;
    assert!(
        matches!(reinsert, Err(StoreError::Conflict(_))),
        "admin tokens: a revoked token cannot be registered again"
    );
    last_admin_is_kept(store).await;
}

/// The last active admin-role token is revoked only when forced.
async fn last_admin_is_kept(store: &dyn Store) {
    // the database is shared by the checks: start from no active admin
    for row in store.list_admin_tokens().await.expect("admin tokens: list") {
        if row.role == "admin" && row.revoked_at.is_none() {
            revoke(store, &row.id, true).await;
        }
    }
    assert_eq!(store.active_admin_count(NOW).await.expect("count"), 0);
    let a = token("admin");
    let expired = AdminTokenRow {
        expires_at: Some(NOW - 1),
        ..token("admin")
    };
    insert(store, &a).await;
    insert(store, &expired).await;
    insert(store, &token("reader")).await;
    assert_eq!(
        store.active_admin_count(NOW).await.expect("count"),
        1,
        "admin tokens: expired admins and readers do not count"
    );
    assert!(
        matches!(
            revoke(store, &a.id, false).await,
            AdminTokenRevocation::LastAdmin(_)
        ),
        "admin tokens: the last active admin is kept"
    );
    let kept = store.get_admin_token(&a.id).await.expect("get");
    assert_eq!(
        kept.and_then(|t| t.revoked_at),
        None,
        "a refused revocation changes nothing"
    );
    assert!(
        revoked(&revoke(store, &expired.id, false).await),
        "an expired admin is not the last"
    );

    let b = token("admin");
    insert(store, &b).await;
    assert!(
        revoked(&revoke(store, &a.id, false).await),
        "another admin is left"
    );
    assert!(matches!(
        revoke(store, &b.id, false).await,
        AdminTokenRevocation::LastAdmin(_)
    ));
    assert!(revoked(&revoke(store, &b.id, true).await), "forced");
    assert_eq!(store.active_admin_count(NOW).await.expect("count"), 0);

    // two revoking the last two admins at once: exactly one succeeds
    let (c, d) = (token("admin"), token("admin"));
    insert(store, &c).await;
    insert(store, &d).await;
    let (first, second) = tokio::join!(revoke(store, &c.id, false), revoke(store, &d.id, false));
    assert_eq!(
        [&first, &second].into_iter().filter(|r| revoked(r)).count(),
        1,
        "admin tokens: concurrent revocations left no admin: {first:?} {second:?}"
    );
    assert_eq!(store.active_admin_count(NOW).await.expect("count"), 1);
}

/// On a fresh database: a token stored by the release before admin-token
/// ids (migration 3) gets its id from its hash, keeps the admin role, and
/// authenticates after the migration.
pub async fn legacy_admin_tokens_keep_working(store: &SqlStore) {
    store.migrate_to(3).await.expect("legacy: migrate to 3");
    let token = "operator-chosen-bootstrap-token-before-ids-0123";
    let hash = hash_admin_token(token);
    sqlx::query(
        "INSERT INTO admin_tokens (token_hash, fingerprint, label, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(hash.to_vec())
    .bind(credential_fingerprint(token))
    .bind("bootstrap")
    .bind(7_i64)
    .execute(&store.pool)
    .await
    .expect("legacy: insert as the old release did");
    store
        .migrate()
        .await
        .expect("legacy: migrate to the newest");
    let id = legacy_admin_token_id(&hash);
    let row = store
        .get_admin_token(&id)
        .await
        .expect("legacy: get")
        .expect("legacy: the old token has the id derived from its hash");
    assert_eq!(
        (
            row.name.as_str(),
            row.role.as_str(),
            row.created_at,
            row.revoked_at
        ),
        ("bootstrap", "admin", 7, None)
    );
    assert_eq!(store.active_admin_count(NOW).await.expect("count"), 1);
    let auth = AdminAuth::default();
    auth.load(&store.list_admin_tokens().await.expect("list"));
    let (_, caller) = auth
        .authenticate(token, NOW)
        .expect("legacy: the old token still authenticates");
    assert_eq!(caller.token_id, id);
}
