//! The keyed admin audit chain end to end: a real control plane process and
//! the real `memtracectl audit verify` — entries verify across a master-key
//! rotation while the old key is held, are reported unverifiable (not
//! tampered) without it, and an entry rewritten through SQL with the plain
//! SHA-256 chain and head recomputed consistently is named as the break.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_control_plane::store::{AuditHead, SqlStore, Store};
use memtrace_tests::cli::Ctl;
use memtrace_tests::control_plane::{ControlPlane, ControlPlaneSpec};
use memtrace_tests::grpc::get_text;

/// The control plane's `memtrace_audit_chain_broken` once its monitor has
/// walked the chain (bounded wait).
async fn chain_broken_metric(cp: &ControlPlane) -> String {
    let mut last = String::new();
    for _ in 0..100 {
        let text = get_text(&cp.url(), "/metrics").await;
        let walked = text
            .lines()
            .find_map(|l| l.strip_prefix("memtrace_audit_chain_verified_timestamp_seconds "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .is_some_and(|t| t > 0.0);
        if walked {
            return text
                .lines()
                .find_map(|l| l.strip_prefix("memtrace_audit_chain_broken "))
                .unwrap_or_default()
                .trim()
                .to_owned();
        }
        last = text;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the audit chain monitor never walked the chain:\n{last}");
}

fn ctl_for(cp: &ControlPlane) -> Ctl {
    Ctl {
        server: cp.url(),
        token: cp.admin_token().unwrap(),
        ca_file: None,
    }
}

#[tokio::test]
async fn verify_across_rotation_unverifiable_keys_and_a_forged_chain() {
    let dir = tempfile::tempdir().unwrap();
    let first = ControlPlaneSpec::default();
    let cp = ControlPlane::start(dir.path(), first.clone())
        .await
        .unwrap();
    let ctl = ctl_for(&cp);
    let org = ctl.json(&["org", "create", "audited"]).await.unwrap();
    let org_id = org["id"].as_str().unwrap().to_owned();
    ctl.json(&[
        "key", "create", "--org", &org_id, "--name", "ci", "--scopes", "read",
    ])
    .await
    .unwrap();
    ctl.json(&["config", "set", "arc.write_batch_size", "300"])
        .await
        .unwrap();
    let verified = ctl.json(&["audit", "verify"]).await.unwrap();
    assert_eq!(
        (verified["ok"].clone(), verified["status"].clone()),
        (true.into(), "ok".into()),
        "{verified}"
    );
    assert_eq!(chain_broken_metric(&cp).await, "0", "an intact chain");
    let listed = ctl.json(&["audit", "list"]).await.unwrap();
    let old_kek = listed["entries"][0]["kek_id"].as_str().unwrap().to_owned();
    assert!(old_kek.starts_with("kek-"), "{listed}");
    cp.stop().await.unwrap();

    // rotated: the old key held as a previous key, old entries verify
    let rotated = ControlPlaneSpec {
        master_key: ControlPlaneSpec::default().master_key,
        previous_master_keys: vec![first.master_key.clone()],
        ..first.clone()
    };
    let cp = ControlPlane::start(dir.path(), rotated.clone())
        .await
        .unwrap();
    let ctl = ctl_for(&cp);
    ctl.json(&["config", "set", "arc.write_batch_size", "400"])
        .await
        .unwrap();
    let verified = ctl.json(&["audit", "verify"]).await.unwrap();
    assert_eq!(verified["ok"], true, "{verified}");
    let entries = verified["entries"].as_u64().unwrap();
    cp.stop().await.unwrap();

    // the old key retired: its entries are unverifiable, not broken
    let retired = ControlPlaneSpec {
        previous_master_keys: Vec::new(),
        ..rotated.clone()
    };
    let cp = ControlPlane::start(dir.path(), retired).await.unwrap();
    let ctl = ctl_for(&cp);
    let out = ctl.run(&["audit", "verify"]).await.unwrap();
    assert_eq!(out.code, Some(1), "{out:?}");
    let problem = format!("unverifiable: key {old_kek} not held");
    assert!(out.stdout.contains(&problem), "{out:?}");
    assert!(out.stderr.contains(&problem), "{out:?}");
    assert!(
        !out.stdout.contains("BROKEN") && !out.stderr.contains("broken"),
        "{out:?}"
    );
    let out = ctl.run(&["audit", "verify", "-o", "json"]).await.unwrap();
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json["status"], "unverifiable", "{json}");
    assert_eq!(json["broken_seq"], serde_json::Value::Null, "{json}");
    cp.stop().await.unwrap();

    // with the keys back, an attacker with write access to the database
    // rewrites the key creation's entry and recomputes the plain SHA-256
    // chain from there, and the head, consistently
    let rotated_again = rotated.clone();
    let cp = ControlPlane::start(dir.path(), rotated).await.unwrap();
    let ctl = ctl_for(&cp);
    let db = cp.data_dir.join("memtrace.db");
    let store = SqlStore::connect(&SqlStore::sqlite_url(db.to_str().unwrap()))
        .await
        .unwrap();
    let mut chain = store.audit_range(0, 1000).await.unwrap();
    assert_eq!(chain.len() as u64, entries);
    let forged = chain.iter().position(|e| e.action == "key.create").unwrap();
    assert!(forged > 0, "entries before it stay as they are");
    chain[forged].details_json = chain[forged].details_json.replace("read", "admin");
    let mut prev = chain[forged - 1].hash.clone();
    for entry in &mut chain[forged..] {
        entry.prev_hash = prev;
        entry.hash = entry.unkeyed_hash().to_vec();
        prev = entry.hash.clone();
    }
    let head = AuditHead {
        seq: chain.last().unwrap().seq,
        hash: prev,
        kek_id: None,
        mac: None,
    };
    store
        .overwrite_audit_for_tests(&chain[forged..], &head)
        .await
        .unwrap();
    store.close().await;
    let seq = chain[forged].seq;
    let out = ctl.run(&["audit", "verify"]).await.unwrap();
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stdout
            .starts_with(&format!("audit chain BROKEN at entry {seq}")),
        "{out:?}"
    );
    assert!(
        out.stderr
            .contains(&format!("audit chain broken at entry {seq}")),
        "{out:?}"
    );
    // the verification just run set the metric; a restarted control plane
    // finds the break by itself on its first walk
    let metrics = get_text(&cp.url(), "/metrics").await;
    assert!(
        metrics.contains("memtrace_audit_chain_broken 1"),
        "{metrics}"
    );
    cp.stop().await.unwrap();
    let cp = ControlPlane::start(dir.path(), rotated_again)
        .await
        .unwrap();
    assert_eq!(chain_broken_metric(&cp).await, "1", "found at start");
    cp.stop().await.unwrap();
}
