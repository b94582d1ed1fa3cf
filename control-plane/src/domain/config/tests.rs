use super::*;
use crate::domain::Publisher;
use crate::domain::types::OrgName;
use crate::store::{AuditFilter, SqlStore};
use memtrace_common::bus::StateBus;
use memtrace_common::bus::memory::MemoryBus;
use memtrace_common::config::{Env, FileSource, load};
use memtrace_common::envelope::{Keyring, MasterKey};
use memtrace_common::error::{CodedError, ErrorCode};
use memtrace_common::state::StateKeys;
use std::sync::Arc;
use std::time::Duration;

struct Fixture {
    cp: ControlPlane,
    bus: Arc<MemoryBus>,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = SqlStore::sqlite_url(dir.path().join("cp.db").to_str().expect("utf-8"));
    let store = SqlStore::connect(&url).await.expect("connect");
    store.migrate().await.expect("migrate");
    let bus = Arc::new(MemoryBus::new());
    let publisher = Publisher::new(
        bus.clone(),
        StateKeys::default(),
        Arc::new(memtrace_common::fleet::ephemeral_keyring()),
    );
    let cp = ControlPlane::new(
        Arc::new(store),
        Arc::new(Keyring::new(MasterKey::new(&[7; 32]), Vec::new())),
        Arc::new(publisher),
        Duration::from_secs(1),
    );
    Fixture { cp, bus, _dir: dir }
}

fn admin() -> AdminActor {
    AdminActor {
        fingerprint: "fp-test".into(),
    }
}

fn code(error: &ControlPlaneError) -> ErrorCode {
    error.code()
}

fn setting(key: &str) -> &'static Setting {
    settings::lookup(key).expect("registered")
}

/// The value published at `key`, once its record verified as signed by
/// this control plane.
async fn published(f: &Fixture, key: &str) -> Option<String> {
    let snapshot = f.bus.load(key).await.expect("load");
    let kv = snapshot.kvs.into_iter().find(|kv| kv.key == key)?;
    let publisher = f.cp.publisher();
    let path = publisher.keys().relative(key).expect("under the prefix");
    let record = memtrace_common::state::open_record(publisher.fleet(), path, &kv.value)
        .expect("authenticated");
    let record = state::SettingRecord::decode(record).expect("record");
    Some(record.value_json)
}

#[tokio::test]
async fn set_get_reset_publish_and_audit() {
    let f = fixture().await;
    let batch = setting("arc.write_batch_size");
    let view = f.cp.get_setting(batch, None).await.unwrap();
    assert_eq!(
        (view.value.clone(), view.source),
        (SettingValue::Int(100), Source::Default)
    );

    let update =
        f.cp.set_setting(&admin(), batch, None, "500")
            .await
            .unwrap();
    assert!(update.changed && update.revision.is_some() && update.audit_seq == Some(1));
    assert_eq!(update.before.shown(), "100");
    assert_eq!(
        (update.after.shown(), update.after.source),
        ("500".into(), Source::Global)
    );
    let key = f.cp.state_keys().global_setting("arc.write_batch_size");
    assert_eq!(published(&f, &key).await.as_deref(), Some("500"));

    let again =
        f.cp.set_setting(&admin(), batch, None, "500")
            .await
            .unwrap();
    assert!(
        !again.changed && again.audit_seq.is_none(),
        "an identical value writes nothing"
    );

    let reset = f.cp.reset_setting(&admin(), batch, None).await.unwrap();
    assert_eq!(
        (reset.after.shown(), reset.after.source),
        ("100".into(), Source::Default)
    );
    assert_eq!(published(&f, &key).await, None, "reset deletes the record");

    let entries = f.cp.list_audit(AuditFilter::default()).await.unwrap();
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["config.reset", "config.set"]);
    let details: Value = serde_json::from_str(&entries[1].details_json).unwrap();
    assert_eq!(
        (details["old"].clone(), details["new"].clone()),
        (Value::Null, json!(500))
    );
    assert_eq!(entries[1].actor, "fp-test");
    assert!(f.cp.verify_audit().await.unwrap().ok());
}

#[tokio::test]
async fn refused_changes_change_nothing() {
    let f = fixture().await;
    let batch = setting("arc.write_batch_size");
    let err =
        f.cp.set_setting(&admin(), batch, None, "0")
            .await
            .unwrap_err();
    assert_eq!(code(&err), ErrorCode::InvalidValue);
    assert!(err.to_string().contains("1..=100000"), "{err}");
    let err =
        f.cp.set_setting(&admin(), batch, None, "lots")
            .await
            .unwrap_err();
    assert!(err.to_string().contains("an integer"), "{err}");

    // locked by default: refused and audited as denied
    let locked = setting("dedup.key_content_bytes");
    let err =
        f.cp.set_setting(&admin(), locked, None, "300")
            .await
            .unwrap_err();
    assert_eq!(code(&err), ErrorCode::PermissionDenied);
    let err =
        f.cp.reset_setting(&admin(), locked, None)
            .await
            .unwrap_err();
    assert_eq!(code(&err), ErrorCode::PermissionDenied);
    let denied =
        f.cp.list_audit(AuditFilter {
            outcome: Some("denied".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(denied.len(), 2);
    assert_eq!(denied[1].target, "dedup.key_content_bytes");
    assert!(
        denied[1].details_json.contains("\"attempted\":\"300\""),
        "{}",
        denied[1].details_json
    );
    assert_eq!(
        f.cp.get_setting(locked, None).await.unwrap().source,
        Source::Default
    );

    // the lock list is configurable
    f.cp.set_locked_settings(&["log.level".to_owned()]).unwrap();
    f.cp.set_setting(&admin(), locked, None, "300")
        .await
        .unwrap();
    assert!(f.cp.set_locked_settings(&["log.levle".to_owned()]).is_err());

    // per-org rules
    let level = setting("log.level");
    let org =
        f.cp.create_org(
            &crate::auth::AdminActor::system(),
            &OrgName::parse("acme").unwrap(),
        )
        .await
        .unwrap();
    let org_id = OrgId::parse(&org.value.org.id).unwrap();
    let err =
        f.cp.set_setting(&admin(), setting("dedup.window_hours"), Some(&org_id), "48")
            .await;
    assert!(err.is_ok());
    let err =
        f.cp.set_setting(
            &admin(),
            setting("telemetry.otlp_endpoint"),
            Some(&org_id),
            "x",
        )
        .await
        .unwrap_err();
    assert_eq!(code(&err), ErrorCode::InvalidValue);
    let missing = OrgId::parse("org_missing").unwrap();
    let err =
        f.cp.set_setting(
            &admin(),
            setting("dedup.window_hours"),
            Some(&missing),
            "48",
        )
        .await
        .unwrap_err();
    assert_eq!(code(&err), ErrorCode::NotFound);
    let err =
        f.cp.set_setting(&admin(), level, None, "debug")
            .await
            .unwrap_err();
    assert_eq!(code(&err), ErrorCode::PermissionDenied);
    assert!(f.cp.verify_audit().await.unwrap().ok());
}

#[tokio::test]
async fn org_overrides_layer_over_global_values() {
    let f = fixture().await;
    let rps = setting("limits.requests_per_second");
    let org =
        f.cp.create_org(
            &crate::auth::AdminActor::system(),
            &OrgName::parse("acme").unwrap(),
        )
        .await
        .unwrap();
    let org_id = OrgId::parse(&org.value.org.id).unwrap();
    f.cp.set_setting(&admin(), rps, None, "50").await.unwrap();
    let update =
        f.cp.set_setting(&admin(), rps, Some(&org_id), "5")
            .await
            .unwrap();
    assert_eq!(update.before.source, Source::Global);
    let key = f.cp.state_keys().org_setting(org_id.as_str(), rps.key);
    assert_eq!(published(&f, &key).await.as_deref(), Some("5"));
    let views = f.cp.list_settings(Some(&org_id)).await.unwrap();
    let view = views.iter().find(|v| v.setting.key == rps.key).unwrap();
    assert_eq!((view.shown(), view.source), ("5".into(), Source::Org));
    assert_eq!(f.cp.get_setting(rps, None).await.unwrap().shown(), "50");
    let audit =
        f.cp.list_audit(AuditFilter {
            org_id: Some(org_id.as_str().into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(audit[0].target, format!("{}/{}", org_id.as_str(), rps.key));

    let reset =
        f.cp.reset_setting(&admin(), rps, Some(&org_id))
            .await
            .unwrap();
    assert_eq!(
        (reset.after.shown(), reset.after.source),
        ("50".into(), Source::Global)
    );
    f.cp.set_setting(&admin(), rps, Some(&org_id), "7")
        .await
        .unwrap();
    let deletes = f.cp.delete_org_settings(&org_id).await.unwrap();
    assert_eq!(deletes, vec![Op::Delete { key }]);
}

#[tokio::test]
async fn rollback_restores_the_previous_value() {
    let f = fixture().await;
    let batch = setting("arc.write_batch_size");
    let first =
        f.cp.set_setting(&admin(), batch, None, "500")
            .await
            .unwrap();
    let second =
        f.cp.set_setting(&admin(), batch, None, "700")
            .await
            .unwrap();
    let rolled =
        f.cp.rollback_setting(&admin(), second.audit_seq.unwrap())
            .await
            .unwrap();
    assert_eq!(
        (rolled.before.shown(), rolled.after.shown()),
        ("700".into(), "500".into())
    );
    let rolled =
        f.cp.rollback_setting(&admin(), first.audit_seq.unwrap())
            .await
            .unwrap();
    assert_eq!(
        rolled.after.source,
        Source::Default,
        "rolling back the first set removes the value"
    );
    let last = f.cp.list_audit(AuditFilter::default()).await.unwrap();
    assert_eq!(last[0].action, "config.rollback");
    assert!(
        last[0].details_json.contains("\"rollback_of\":1"),
        "{}",
        last[0].details_json
    );

    let err = f.cp.rollback_setting(&admin(), 999).await.unwrap_err();
    assert_eq!(code(&err), ErrorCode::NotFound);
    f.cp.record_audit(&admin(), "org.create", "org_x", AuditOutcome::Ok, json!({}))
        .await
        .unwrap();
    let org_entry = f.cp.list_audit(AuditFilter::default()).await.unwrap()[0].seq;
    let err =
        f.cp.rollback_setting(&admin(), org_entry)
            .await
            .unwrap_err();
    assert_eq!(code(&err), ErrorCode::FailedPrecondition);

    let headers = setting("telemetry.otlp_headers");
    let secret = "authorization=Bearer s3cr3t-value";
    let update =
        f.cp.set_setting(&admin(), headers, None, secret)
            .await
            .unwrap();
    assert_eq!(update.after.shown(), MASK);
    let key = f.cp.state_keys().global_setting(headers.key);
    assert_eq!(
        published(&f, &key).await,
        None,
        "sensitive values are never published in clear"
    );
    let raw =
        f.cp.store()
            .get_setting(headers.key, "")
            .await
            .unwrap()
            .unwrap();
    assert!(
        raw.value_json.starts_with("\"sealed:v1:") && !raw.value_json.contains("s3cr3t"),
        "sealed at rest: {}",
        raw.value_json
    );
    let view = f.cp.get_setting(headers, None).await.unwrap();
    assert_eq!(view.value, SettingValue::String(secret.into()));
    let again =
        f.cp.set_setting(&admin(), headers, None, secret)
            .await
            .unwrap();
    assert!(
        !again.changed,
        "an identical sensitive value writes nothing"
    );
    assert_eq!(f.cp.rewrap_sensitive_settings().await.unwrap(), (0, 1));
    let entry = f.cp.get_audit(update.audit_seq.unwrap()).await.unwrap();
    assert!(
        !entry.details_json.contains("s3cr3t"),
        "{}",
        entry.details_json
    );
    let err =
        f.cp.rollback_setting(&admin(), entry.seq)
            .await
            .unwrap_err();
    assert_eq!(code(&err), ErrorCode::FailedPrecondition);
    let export = f.cp.export_settings().await.unwrap();
    assert!(!export.document.to_string().contains("s3cr3t"));
    assert_eq!(export.excluded_sensitive, vec![headers.key.to_owned()]);
}

#[tokio::test]
async fn export_then_import() {
    let f = fixture().await;
    let org =
        f.cp.create_org(
            &crate::auth::AdminActor::system(),
            &OrgName::parse("acme").unwrap(),
        )
        .await
        .unwrap();
    let org_id = org.value.org.id.clone();
    let org_ref = OrgId::parse(&org_id).unwrap();
    f.cp.set_setting(&admin(), setting("arc.write_batch_size"), None, "500")
        .await
        .unwrap();
    f.cp.set_setting(
        &admin(),
        setting("limits.max_queued_events"),
        Some(&org_ref),
        "42",
    )
    .await
    .unwrap();
    let export = f.cp.export_settings().await.unwrap();
    assert_eq!(export.values, 2);
    assert_eq!(export.document["settings"]["arc.write_batch_size"], 500);
    assert_eq!(
        export.document["orgs"][&org_id]["limits.max_queued_events"],
        42
    );
    let text = export.document.to_string();

    let same =
        f.cp.import_settings(&admin(), &text, ImportMode::DryRun, StaleValues::Refuse)
            .await
            .unwrap();
    assert!(
        same.changes.is_empty() && same.conflicts.is_empty() && same.unchanged == 2,
        "{same:?}"
    );

    let mut doc = export.document.clone();
    doc["settings"]["arc.write_batch_size"] = json!(800);
    doc["settings"]["dedup.key_content_bytes"] = json!(64);
    doc["settings"]["arc.write_batch"] = json!(1);
    doc["settings"]["dedup.window_hours"] = json!("soon");
    let dry =
        f.cp.import_settings(
            &admin(),
            &doc.to_string(),
            ImportMode::DryRun,
            StaleValues::Refuse,
        )
        .await
        .unwrap();
    assert_eq!(dry.changes.len(), 2, "{dry:?}");
    let kinds: Vec<ConflictKind> = dry.conflicts.iter().map(|c| c.kind).collect();
    assert_eq!(
        kinds,
        [
            ConflictKind::UnknownKey,
            ConflictKind::Locked,
            ConflictKind::InvalidValue
        ]
    );
    assert!(
        dry.conflicts[0]
            .reason
            .contains("did you mean arc.write_batch_size")
    );
    let head = f.cp.verify_audit().await.unwrap().head_seq;

    let err =
        f.cp.import_settings(
            &admin(),
            &doc.to_string(),
            ImportMode::Apply,
            StaleValues::Refuse,
        )
        .await
        .unwrap_err();
    assert_eq!(code(&err), ErrorCode::PermissionDenied, "{err}");
    assert_eq!(
        f.cp.get_setting(setting("arc.write_batch_size"), None)
            .await
            .unwrap()
            .shown(),
        "500"
    );
    let denied = f.cp.list_audit(AuditFilter::default()).await.unwrap();
    assert_eq!(
        (denied[0].seq, denied[0].outcome.as_str()),
        (head + 1, "denied")
    );

    let obj = doc["settings"].as_object_mut().unwrap();
    obj.remove("dedup.key_content_bytes");
    obj.remove("arc.write_batch");
    obj.remove("dedup.window_hours");
    let applied =
        f.cp.import_settings(
            &admin(),
            &doc.to_string(),
            ImportMode::Apply,
            StaleValues::Refuse,
        )
        .await
        .unwrap();
    assert!(applied.applied && applied.revision.is_some(), "{applied:?}");
    assert_eq!(
        f.cp.get_setting(setting("arc.write_batch_size"), None)
            .await
            .unwrap()
            .shown(),
        "800"
    );

    // the old export now conflicts: the value changed after it was taken
    tokio::time::sleep(Duration::from_millis(5)).await;
    let stale =
        f.cp.import_settings(&admin(), &text, ImportMode::DryRun, StaleValues::Refuse)
            .await
            .unwrap();
    assert_eq!(stale.conflicts.len(), 1, "{stale:?}");
    assert_eq!(stale.conflicts[0].kind, ConflictKind::ChangedSinceExport);
    let err =
        f.cp.import_settings(&admin(), &text, ImportMode::Apply, StaleValues::Refuse)
            .await
            .unwrap_err();
    assert_eq!(code(&err), ErrorCode::FailedPrecondition);
    f.cp.import_settings(&admin(), &text, ImportMode::Apply, StaleValues::Overwrite)
        .await
        .unwrap();
    assert_eq!(
        f.cp.get_setting(setting("arc.write_batch_size"), None)
            .await
            .unwrap()
            .shown(),
        "500"
    );

    for bad in [
        "nope",
        "{}",
        r#"{"version":2}"#,
        r#"{"version":1,"settings":[]}"#,
    ] {
        let err =
            f.cp.import_settings(&admin(), bad, ImportMode::DryRun, StaleValues::Refuse)
                .await
                .unwrap_err();
        assert_eq!(code(&err), ErrorCode::InvalidArgument, "{bad}");
    }
    assert!(f.cp.verify_audit().await.unwrap().ok());
}

#[tokio::test]
async fn seeding_happens_on_the_first_start_only() {
    let f = fixture().await;
    let env = Env::from_pairs([
        ("MEMTRACE_ARC_WRITE_BATCH_SIZE", "250"),
        ("MEMTRACE_CONTROL_PLANE_LOCKED_SETTINGS", "dedup.enabled"),
    ]);
    let config = load(&FileSource::None, &env).unwrap().config;
    f.cp.seed_settings(&config).await.unwrap();
    let batch = setting("arc.write_batch_size");
    assert_eq!(f.cp.get_setting(batch, None).await.unwrap().shown(), "250");
    assert!(f.cp.is_locked("dedup.enabled") && !f.cp.is_locked("dedup.key_content_bytes"));
    let key = f.cp.state_keys().global_setting(batch.key);
    assert_eq!(published(&f, &key).await.as_deref(), Some("250"));
    let seeded = f.cp.list_audit(AuditFilter::default()).await.unwrap();
    assert_eq!(
        (seeded[0].action.as_str(), seeded[0].actor.as_str()),
        ("config.seed", "system")
    );

    f.cp.set_setting(&admin(), batch, None, "500")
        .await
        .unwrap();
    f.cp.seed_settings(&config).await.unwrap();
    assert_eq!(
        f.cp.get_setting(batch, None).await.unwrap().shown(),
        "500",
        "the database wins"
    );

    let bad = load(
        &FileSource::None,
        &Env::from_pairs([("MEMTRACE_ARC_WRITE_BATCH_SIZE", "0")]),
    )
    .unwrap()
    .config;
    let err = f.cp.seed_settings(&bad).await.unwrap_err();
    assert!(
        err.to_string().contains("MEMTRACE_ARC_WRITE_BATCH_SIZE"),
        "{err}"
    );
}
