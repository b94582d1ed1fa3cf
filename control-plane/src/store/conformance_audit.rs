//! Conformance checks that a change of an org, an API key, an Arc binding
//! or an admin token and its audit entry commit together, part of
//! [`super::conformance::run_all`]: a change that fails appends nothing,
//! and an entry the database refuses takes its change with it. The refusal
//! is real, not simulated: the database accepts only the outcomes `ok`,
//! `denied` and `failed`, so an entry with any other outcome cannot be
//! appended, exactly as a failed append after a committed change could not
//! be before changes and entries shared a transaction.

use super::conformance::{AUDIT_KEY, audited};
use super::conformance_config::verify_whole_chain;
use super::{
    AdminTokenRevocation, AdminTokenRow, ApiKeyRow, ArcBindingRow, AuditRecord, AuditWith,
    OrgDeletion, OrgRow, SettingChange, Store, StoreError,
};
use memtrace_common::credentials::new_admin_token;
use memtrace_common::ids::new_id;

fn entry_for(action: &str, target: &str, details_json: String, outcome: &str) -> AuditRecord {
    AuditRecord {
        at_ms: 1_700_000_000_000,
        actor: "fp-conformance".into(),
        action: action.into(),
        target: target.into(),
        outcome: outcome.into(),
        details_json,
    }
}

fn refused_record<T>(_: &T) -> AuditRecord {
    entry_for(
        "test.refused",
        "conformance",
        "{}".into(),
        "refused-by-the-database",
    )
}

/// An audit entry the database refuses to append.
fn refused<T: 'static>() -> AuditWith<'static, T> {
    AuditWith {
        key: &AUDIT_KEY,
        record: &refused_record::<T>,
    }
}

/// The last entry, which must be `head_seq` past `before`.
async fn appended_one(store: &dyn Store, before: i64, what: &str) -> super::AuditEntry {
    let head = store.audit_head().await.expect("audited: head");
    assert_eq!(head.seq, before + 1, "audited: {what} appends one entry");
    let entry = store
        .get_audit(head.seq)
        .await
        .expect("audited: get")
        .expect("audited: the head entry exists");
    assert_eq!(
        entry.kek_id.as_deref(),
        Some(AUDIT_KEY.kek_id()),
        "audited: {what}'s entry is keyed"
    );
    entry
}

async fn head_seq(store: &dyn Store) -> i64 {
    store.audit_head().await.expect("audited: head").seq
}

fn is_refusal<T: std::fmt::Debug>(result: &Result<T, StoreError>) -> bool {
    matches!(result, Err(StoreError::Database(_)))
}

/// Every audited change, once with an entry the database refuses (nothing
/// changes, nothing is appended), once failing itself (nothing is
/// appended), and once committing (change and entry, the entry built from
/// what the change did).
pub async fn changes_commit_with_their_audit_entries(store: &dyn Store) {
    org_changes(store).await;
    binding_and_key_changes(store).await;
    admin_token_changes(store).await;
    verify_whole_chain(store).await;
}

async fn admin_token_changes(store: &dyn Store) {
    let new = new_admin_token();
    let token = AdminTokenRow {
        id: new.token_id,
        token_hash: new.hash.to_vec(),
        fingerprint: new_id("fp"),
        name: new_id("audited"),
        role: "reader".into(),
        created_at: 1,
        expires_at: None,
        last_used_at: None,
        revoked_at: None,
    };
    let before = head_seq(store).await;
    let result = store.insert_admin_token(&token, Some(refused())).await;
    assert!(
        is_refusal(&result),
        "audited: admin token create: {result:?}"
    );
    assert_eq!(
        store.get_admin_token(&token.id).await.expect("get token"),
        None,
        "audited: an admin token whose entry was refused is not created"
    );
    assert_eq!(head_seq(store).await, before);
    let created = |row: &AdminTokenRow| entry_for("admin_token.create", &row.id, "{}".into(), "ok");
    store
        .insert_admin_token(&token, Some(AuditWith::new(&AUDIT_KEY, &created)))
        .await
        .expect("audited: admin token create");
    let entry = appended_one(store, before, "admin token create").await;
    assert_eq!(
        (entry.action.as_str(), entry.target.as_str()),
        ("admin_token.create", token.id.as_str())
    );
    let duplicate = store.insert_admin_token(&token, Some(audited())).await;
    assert!(matches!(duplicate, Err(StoreError::Conflict(_))));
    assert_eq!(
        head_seq(store).await,
        entry.seq,
        "audited: a refused admin token create appends nothing"
    );

    let before = head_seq(store).await;
    let result = store
        .revoke_admin_token(&token.id, 9, false, refused())
        .await;
    assert!(
        is_refusal(&result),
        "audited: admin token revoke: {result:?}"
    );
    assert_eq!(
        store
            .get_admin_token(&token.id)
            .await
            .expect("get token")
            .and_then(|t| t.revoked_at),
        None,
        "audited: an admin token revocation whose entry was refused does not happen"
    );
    assert_eq!(head_seq(store).await, before);
    let revoked = |row: &AdminTokenRow| {
        let details = format!(r#"{{"revoked_at":{}}}"#, row.revoked_at.unwrap_or(0));
        entry_for("admin_token.revoke", &row.id, details, "ok")
    };
    let outcome = store
        .revoke_admin_token(&token.id, 9, false, AuditWith::new(&AUDIT_KEY, &revoked))
        .await
        .expect("audited: admin token revoke");
    assert!(matches!(outcome, AdminTokenRevocation::Revoked(_)));
    let entry = appended_one(store, before, "admin token revoke").await;
    assert_eq!(
        entry.details_json, r#"{"revoked_at":9}"#,
        "audited: the entry is built from the revoked row"
    );
    let again = store
        .revoke_admin_token(&token.id, 10, false, audited())
        .await
        .expect("audited: revoke again");
    assert!(matches!(again, AdminTokenRevocation::AlreadyRevoked(_)));
    let missing = store
        .revoke_admin_token("adm_0000000000000000", 10, false, audited())
        .await
        .expect("audited: revoke missing");
    assert_eq!(missing, AdminTokenRevocation::NotFound);
    assert_eq!(
        head_seq(store).await,
        entry.seq,
        "audited: nothing revoked, nothing appended"
    );
}

async fn org_changes(store: &dyn Store) {
    let org = OrgRow {
        id: new_id("org"),
        name: new_id("audited"),
        created_at: 1,
    };
    let before = head_seq(store).await;
    let result = store.insert_org(&org, refused()).await;
    assert!(is_refusal(&result), "audited: org create: {result:?}");
    assert!(
        store
            .get_org(&org.id)
            .await
            .expect("audited: get org")
            .is_none(),
        "audited: an org whose entry was refused is not created"
    );
    assert_eq!(head_seq(store).await, before);

    let created = |row: &OrgRow| entry_for("org.create", &row.id, "{}".into(), "ok");
    let audit = AuditWith::new(&AUDIT_KEY, &created);
    store
        .insert_org(&org, audit)
        .await
        .expect("audited: create");
    let entry = appended_one(store, before, "org create").await;
    assert_eq!(
        (entry.action.as_str(), entry.target.as_str()),
        ("org.create", org.id.as_str())
    );
    let duplicate = store.insert_org(&org, audited()).await;
    assert!(matches!(duplicate, Err(StoreError::Conflict(_))));
    assert_eq!(
        head_seq(store).await,
        entry.seq,
        "audited: a refused change appends nothing"
    );

    // delete: the org, its key, binding and setting override go with the
    // entry, or stay with it
    let key = key_row(&org.id);
    store
        .insert_api_key(&key, audited())
        .await
        .expect("audited: key");
    store
        .put_arc_binding(&binding_row(&org.id), false, audited())
        .await
        .expect("audited: bind");
    let setting = SettingChange {
        key: new_id("setting"),
        org_id: org.id.clone(),
        expected: None,
        new: Some("1".into()),
        at_ms: 1,
    };
    store
        .apply_setting_changes(std::slice::from_ref(&setting), &[], &AUDIT_KEY)
        .await
        .expect("audited: setting");
    let before = head_seq(store).await;
    let result = store.delete_org(&org.id, 5, None, refused()).await;
    assert!(is_refusal(&result), "audited: org delete: {result:?}");
    assert!(
        store.get_org(&org.id).await.expect("get").is_some()
            && store.get_api_key(&key.id).await.expect("key").is_some()
            && store.get_arc_binding(&org.id).await.expect("arc").is_some()
            && store
                .get_setting(&setting.key, &org.id)
                .await
                .expect("setting")
                .is_some(),
        "audited: an org delete whose entry was refused removes nothing"
    );
    assert_eq!(head_seq(store).await, before);
    let deleted = |d: &OrgDeletion| {
        let details = format!(
            r#"{{"keys":{},"settings":{}}}"#,
            d.api_key_ids.len(),
            d.settings_removed.len()
        );
        entry_for("org.delete", &d.org.id, details, "ok")
    };
    let audit = AuditWith::new(&AUDIT_KEY, &deleted);
    store
        .delete_org(&org.id, 5, None, audit)
        .await
        .expect("audited: delete")
        .expect("audited: the org existed");
    let entry = appended_one(store, before, "org delete").await;
    assert_eq!(
        entry.details_json, r#"{"keys":1,"settings":1}"#,
        "audited: the entry is built from what the delete removed"
    );
    assert_eq!(
        store
            .get_setting(&setting.key, &org.id)
            .await
            .expect("setting"),
        None,
        "audited: the org's overrides go with it"
    );
    let missing = store.delete_org(&org.id, 6, None, audited()).await;
    assert!(matches!(missing, Ok(None)));
    assert_eq!(
        head_seq(store).await,
        entry.seq,
        "audited: nothing deleted, nothing appended"
    );
}

async fn binding_and_key_changes(store: &dyn Store) {
    let org = OrgRow {
        id: new_id("org"),
        name: new_id("audited"),
        created_at: 1,
    };
    store
        .insert_org(&org, audited())
        .await
        .expect("audited: org");

    let before = head_seq(store).await;
    let binding = binding_row(&org.id);
    let result = store.put_arc_binding(&binding, false, refused()).await;
    assert!(is_refusal(&result), "audited: bind: {result:?}");
    assert_eq!(
        store.get_arc_binding(&org.id).await.expect("arc"),
        None,
        "audited: a binding whose entry was refused is not stored"
    );
    store
        .put_arc_binding(&binding, false, audited())
        .await
        .expect("audited: bind");
    appended_one(store, before, "bind").await;
    let before = head_seq(store).await;
    let result = store.delete_arc_binding(&org.id, refused()).await;
    assert!(is_refusal(&result), "audited: unbind: {result:?}");
    assert_eq!(
        store.get_arc_binding(&org.id).await.expect("arc"),
        Some(binding.clone()),
        "audited: a binding whose removal's entry was refused stays"
    );
    let removed = |row: &ArcBindingRow| entry_for("arc.remove", &row.id, "{}".into(), "ok");
    let audit = AuditWith::new(&AUDIT_KEY, &removed);
    assert!(
        store
            .delete_arc_binding(&org.id, audit)
            .await
            .expect("unbind")
    );
    assert_eq!(
        appended_one(store, before, "unbind").await.target,
        binding.id
    );
    let before = head_seq(store).await;
    assert!(
        !store
            .delete_arc_binding(&org.id, audited())
            .await
            .expect("unbind")
    );
    assert_eq!(
        head_seq(store).await,
        before,
        "audited: no binding, no entry"
    );

    let key = key_row(&org.id);
    let result = store.insert_api_key(&key, refused()).await;
    assert!(is_refusal(&result), "audited: key create: {result:?}");
    assert_eq!(
        store.get_api_key(&key.id).await.expect("key"),
        None,
        "audited: a key whose entry was refused is not created"
    );
    store
        .insert_api_key(&key, audited())
        .await
        .expect("audited: key");
    appended_one(store, before, "key create").await;
    let before = head_seq(store).await;
    let result = store.revoke_api_key(&key.id, 9, refused()).await;
    assert!(is_refusal(&result), "audited: revoke: {result:?}");
    assert_eq!(
        store
            .get_api_key(&key.id)
            .await
            .expect("key")
            .and_then(|k| k.revoked_at),
        None,
        "audited: a revocation whose entry was refused does not happen"
    );
    let revoked = |row: &ApiKeyRow| {
        let details = format!(r#"{{"revoked_at":{}}}"#, row.revoked_at.unwrap_or(0));
        entry_for("key.revoke", &row.id, details, "ok")
    };
    let audit = AuditWith::new(&AUDIT_KEY, &revoked);
    store
        .revoke_api_key(&key.id, 9, audit)
        .await
        .expect("audited: revoke")
        .expect("audited: the key exists");
    let entry = appended_one(store, before, "revoke").await;
    assert_eq!(entry.details_json, r#"{"revoked_at":9}"#);
    let missing = store.revoke_api_key("key_missing", 1, audited()).await;
    assert!(matches!(missing, Ok(None)));
    assert_eq!(
        head_seq(store).await,
        entry.seq,
        "audited: no key, no entry"
    );
}

fn key_row(org_id: &str) -> ApiKeyRow {
    ApiKeyRow {
        id: new_id("key"),
        org_id: org_id.to_owned(),
        name: new_id("audited"),
        key_hash: new_id("h").into_bytes(),
        scopes: "read".into(),
        created_at: 1,
        expires_at: None,
        last_used_at: None,
        revoked_at: None,
        legacy: None,
    }
}

fn binding_row(org_id: &str) -> ArcBindingRow {
    ArcBindingRow {
        id: new_id("arc"),
        org_id: org_id.to_owned(),
        url: "http://127.0.0.1:8000".into(),
        database: "db".into(),
        measurement: "events".into(),
        api_key_envelope: None,
        created_at: 1,
        updated_at: 1,
    }
}
