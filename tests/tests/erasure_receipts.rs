//! Erasure receipts end to end: a real control plane creates its receipt
//! signing key at start and lists it (`memtracectl erasure keys`, also to
//! readers); a receipt signed with that key through the domain's
//! `ReceiptSigner` over the same database (the erasure jobs' path) verifies
//! with `memtracectl erasure verify` while no control plane runs, with and
//! without `--keys`; an edited byte, an untrusted key and a rotation are
//! told apart; two replicas on one PostgreSQL converge on one key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_common::envelope::{Keyring, MasterKey};
use memtrace_common::receipt::{ErasureTarget, Receipt, SignedReceipt, TableVerification};
use memtrace_control_plane::domain::ReceiptSigner;
use memtrace_control_plane::store::{SqlStore, Store};
use memtrace_tests::cli::{CliOutput, Ctl, memtracectl};
use memtrace_tests::control_plane::{ControlPlane, ControlPlaneSpec};
use memtrace_tests::postgres::PgServer;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

fn ctl(cp: &ControlPlane, token: &str) -> Ctl {
    Ctl {
        server: cp.url(),
        token: token.to_owned(),
        ca_file: None,
    }
}

fn receipt(org_id: &str, rows: u64) -> Receipt {
    let now = jiff::Timestamp::now();
    Receipt {
        receipt_id: format!("rcp_{rows}"),
        erasure_id: format!("era_{rows}"),
        org_id: org_id.to_owned(),
        target: ErasureTarget::arc(
            "http://arc-user:arc-secret@127.0.0.1:8000",
            "tenant_db",
            vec!["memories".into()],
        )
        .unwrap(),
        scope: serde_json::json!({"kind": "memory_ids", "ids": ["m1", "m2"]}),
        requested_by: "fp-e2e".into(),
        requested_at: now,
        started_at: now,
        finished_at: now,
        rows_removed: BTreeMap::from([("memories".into(), rows)]),
        verification: BTreeMap::from([(
            "memories".into(),
            TableVerification {
                query: format!(
                    "SELECT COUNT(*) AS n FROM tenant_db.memories WHERE org_id = '{org_id}' AND id IN ('m1', 'm2')"
                ),
                result: 0,
            },
        )]),
        issued_at: now,
    }
}

/// A signer over the control plane's own SQLite database and master key,
/// as the erasure jobs get it from the control plane.
async fn signer(cp: &ControlPlane) -> (ReceiptSigner, Arc<dyn Store>, Arc<Keyring>) {
    let path = cp.data_dir.join("memtrace.db");
    let store: Arc<dyn Store> = Arc::new(
        SqlStore::connect(&SqlStore::sqlite_url(path.to_str().unwrap()))
            .await
            .unwrap(),
    );
    let key = memtrace_common::keys::parse_key("master", Some(&cp.spec.master_key)).unwrap();
    let keyring = Arc::new(Keyring::new(MasterKey::new(&key), Vec::new()));
    (
        ReceiptSigner::new(store.clone(), keyring.clone()),
        store,
        keyring,
    )
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// `memtracectl erasure verify ARGS` with no server, no token: offline.
async fn verify(args: &[&str]) -> CliOutput {
    let mut full = vec!["erasure", "verify"];
    full.extend(args);
    memtracectl(&full, &[]).await.unwrap()
}

fn failed_check(out: &CliOutput, check: &str) {
    assert!(!out.success, "verified: {}", out.stdout);
    assert_eq!(out.code, Some(1));
    let first = out.stderr.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("error: receipt verification failed (")
            && first.contains(&format!("({check} check)")),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn receipts_signed_with_the_control_planes_key_verify_offline() {
    let dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let spec = ControlPlaneSpec::default();
    let cp = ControlPlane::start(dir.path(), spec.clone()).await.unwrap();
    let admin = ctl(&cp, &cp.admin_token().unwrap());

    // the key exists from the start; readers may list it
    let keys = admin.json(&["erasure", "keys"]).await.unwrap();
    let listed = keys["keys"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{keys}");
    assert_eq!(listed[0]["key_id"], "rk_1");
    assert_eq!(listed[0]["algorithm"], "ed25519");
    assert!(listed[0]["retired_at"].is_null());
    let fingerprint = listed[0]["fingerprint"].as_str().unwrap().to_owned();
    assert!(fingerprint.starts_with("SHA256:"));
    let reader = admin
        .json(&[
            "admin-token",
            "create",
            "--name",
            "receipt-checker",
            "--role",
            "reader",
        ])
        .await
        .unwrap();
    let reader = ctl(&cp, reader["token"].as_str().unwrap());
    assert_eq!(reader.json(&["erasure", "keys"]).await.unwrap(), keys);
    let refused = reader.run(&["erasure", "rotate-key"]).await.unwrap();
    assert!(
        !refused.success && refused.stderr.contains("reader"),
        "{}",
        refused.stderr
    );
    let table = admin.run(&["erasure", "keys"]).await.unwrap();
    assert!(table.stdout.contains("rk_1") && table.stdout.contains("signing"));
    let keys_v1 = write(files.path(), "keys-v1.json", &keys.to_string());

    // sign through the domain over the control plane's database
    let (signer, store, keyring) = signer(&cp).await;
    let signed = signer.sign(receipt("org_e2e", 2)).await.unwrap();
    assert_eq!(signed.signature.key_id, "rk_1");
    assert!(!signed.to_json_pretty().contains("arc-secret"));
    let receipt_v1 = write(files.path(), "receipt-v1.json", &signed.to_json_pretty());

    // the private key is nowhere in the control plane's output
    let row = store
        .list_signing_keys(memtrace_control_plane::store::KeyFamily::Receipt)
        .await
        .unwrap()
        .pop()
        .unwrap();
    let seed = keyring
        .open(
            memtrace_common::envelope::Binding {
                org_id: "",
                record_id: "rk_1",
                purpose: memtrace_control_plane::domain::RECEIPT_KEY_PURPOSE,
            },
            &row.private_envelope,
        )
        .unwrap();
    let logs = cp.logs();
    for shown in [
        hex::encode(seed.as_slice()),
        memtrace_common::receipt::fingerprint(seed.as_slice()),
    ] {
        assert!(!logs.contains(&shown), "receipt key seed in the log");
    }
    assert!(
        logs.contains(&fingerprint),
        "the key's fingerprint is logged at start"
    );

    // offline: the control plane is stopped
    cp.stop().await.unwrap();
    let out = verify(&[&receipt_v1]).await;
    assert!(out.success, "{}", out.stderr);
    for shown in [
        "signature valid",
        "rcp_2",
        "org_e2e",
        "memories=2",
        "rk_1",
        &fingerprint,
    ] {
        assert!(out.stdout.contains(shown), "{shown} in\n{}", out.stdout);
    }
    let out = verify(&[&receipt_v1, "--keys", &keys_v1, "--output", "json"]).await;
    assert!(out.success, "{}", out.stderr);
    let json = out.json().unwrap();
    assert_eq!(json["verified"], true);
    assert_eq!(json["key_trusted"], true);
    assert_eq!(json["fingerprint"], fingerprint.as_str());
    assert_eq!(json["rows_removed"]["memories"], 2);

    // one byte edited: rows removed 2 -> 3
    let text = std::fs::read_to_string(&receipt_v1).unwrap();
    let edited = text.replacen("\"memories\": 2", "\"memories\": 3", 1);
    assert_ne!(edited, text);
    assert_eq!(edited.len(), text.len());
    let edited = write(files.path(), "edited.json", &edited);
    failed_check(&verify(&[&edited]).await, "signature");
    failed_check(&verify(&[&edited, "--keys", &keys_v1]).await, "signature");

    // the public key swapped for another (self-signed forgery): intact, untrusted
    let forger = memtrace_common::receipt::ReceiptSigningKey::generate("rk_1");
    let forged = forger.sign(receipt("org_e2e", 200)).unwrap();
    let forged = write(files.path(), "forged.json", &forged.to_json_pretty());
    assert!(verify(&[&forged]).await.success);
    failed_check(&verify(&[&forged, "--keys", &keys_v1]).await, "trusted_key");
    let mut swapped: Value = serde_json::from_str(&text).unwrap();
    swapped["signature"]["public_key"] = forger.public_key_base64().into();
    let swapped = write(files.path(), "swapped.json", &swapped.to_string());
    failed_check(&verify(&[&swapped]).await, "signature");

    // rotation: rk_2 signs, rk_1 is retired and still verifies
    let cp_spec = spec.clone();
    let cp = ControlPlane::start(dir.path(), spec).await.unwrap();
    let admin = ctl(&cp, &cp.admin_token().unwrap());
    let rotated = admin.json(&["erasure", "rotate-key"]).await.unwrap();
    assert_eq!(rotated["key_id"], "rk_2");
    let keys = admin.json(&["erasure", "keys"]).await.unwrap();
    assert_eq!(keys["keys"].as_array().unwrap().len(), 2);
    assert!(!keys["keys"][0]["retired_at"].is_null());
    let keys_v2 = write(files.path(), "keys-v2.json", &keys.to_string());
    let signed_v2: SignedReceipt = signer.sign(receipt("org_e2e", 5)).await.unwrap();
    assert_eq!(signed_v2.signature.key_id, "rk_2");
    let receipt_v2 = write(files.path(), "receipt-v2.json", &signed_v2.to_json_pretty());
    for receipt in [&receipt_v1, &receipt_v2] {
        let out = verify(&[receipt, "--keys", &keys_v2]).await;
        assert!(out.success, "{}", out.stderr);
    }
    failed_check(
        &verify(&[&receipt_v2, "--keys", &keys_v1]).await,
        "trusted_key",
    );

    // key creation and rotation are in the audit trail, which still verifies
    let audit = admin.json(&["audit", "list"]).await.unwrap();
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .filter(|a| a.starts_with("receipt_key."))
        .collect();
    assert_eq!(
        actions,
        ["receipt_key.rotate", "receipt_key.create"],
        "{audit}"
    );
    admin.json(&["audit", "verify"]).await.unwrap();
    cp.stop().await.unwrap();

    // a database writer without the master key adds a public key of their
    // own: it is not listed (the listing fails, naming it), nor used
    let db = rusqlite::Connection::open(dir.path().join("data/memtrace.db")).unwrap();
    db.execute(
        "INSERT INTO receipt_keys (version, key_id, public_key, private_envelope, created_at) \
         VALUES (3, 'rk_3', ?1, ?2, 1)",
        rusqlite::params![forger.public_key().to_vec(), vec![1u8; 120]],
    )
    .unwrap();
    drop(db);
    let cp = ControlPlane::start(dir.path(), cp_spec).await.unwrap();
    let admin = ctl(&cp, &cp.admin_token().unwrap());
    let out = admin.run(&["erasure", "keys"]).await.unwrap();
    assert!(
        !out.success && out.stderr.contains("rk_3 cannot be authenticated"),
        "{out:?}"
    );
    assert!(signer.sign(receipt("org_e2e", 7)).await.is_err());
    cp.stop().await.unwrap();
}

#[tokio::test]
async fn replicas_on_one_postgres_converge_on_one_receipt_key() {
    let pg = tokio::task::spawn_blocking(PgServer::start)
        .await
        .unwrap()
        .unwrap();
    let url = pg.fresh_database("receipts").unwrap();
    let spec = ControlPlaneSpec {
        database_url: Some(url),
        ..ControlPlaneSpec::default()
    };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // started together: both find no key and create "the first" one
    let (a, b) = tokio::join!(
        ControlPlane::start(dir_a.path(), spec.clone()),
        ControlPlane::start(dir_b.path(), spec.clone())
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let keys_a = ctl(&a, &a.admin_token().unwrap())
        .json(&["erasure", "keys"])
        .await
        .unwrap();
    let keys_b = ctl(&b, &b.admin_token().unwrap())
        .json(&["erasure", "keys"])
        .await
        .unwrap();
    assert_eq!(keys_a["keys"].as_array().unwrap().len(), 1, "{keys_a}");
    assert_eq!(keys_a, keys_b);
    let rows = pg
        .psql(
            &pg.database_url("receipts"),
            "SELECT count(*) FROM receipt_keys",
        )
        .unwrap();
    assert_eq!(rows.trim(), "1");
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}
