//! Admin tokens end to end, with the real control plane and the real
//! `memtracectl`: a reader token reads and is refused every change
//! (PERMISSION_DENIED naming its role), a revoked token is refused by the
//! very next call, the last admin token cannot be revoked unless forced,
//! every create, revoke and refusal is in the audit trail, and replicas
//! sharing a database follow each other's changes within the reload bound.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_common::credentials::identify_admin_token;
use memtrace_control_plane::domain::ADMIN_TOKEN_RELOAD_INTERVAL;
use memtrace_proto::admin::v1 as pb;
use memtrace_tests::cli::{CliOutput, Ctl};
use memtrace_tests::control_plane::{ControlPlane, ControlPlaneSpec};
use memtrace_tests::postgres::PgServer;
use serde_json::Value;
use std::time::{Duration, Instant};

fn ctl(cp: &ControlPlane, token: &str) -> Ctl {
    Ctl {
        server: cp.url(),
        token: token.to_owned(),
        ca_file: None,
    }
}

/// Creates an admin token with `role`; returns (id, secret).
async fn create(admin: &Ctl, name: &str, role: &str) -> (String, String) {
    let created = admin
        .json(&["admin-token", "create", "--name", name, "--role", role])
        .await
        .unwrap();
    assert_eq!(created["role"], role, "{created}");
    (
        created["id"].as_str().unwrap().to_owned(),
        created["token"].as_str().unwrap().to_owned(),
    )
}

fn failed(out: &CliOutput, needle: &str) -> bool {
    !out.success && out.stderr.contains(needle)
}

/// The gRPC code of CreateOrg called with `token`.
async fn create_org_code(cp: &ControlPlane, token: &str) -> tonic::Code {
    let mut orgs = pb::org_service_client::OrgServiceClient::connect(cp.url())
        .await
        .unwrap();
    let mut request = tonic::Request::new(pb::CreateOrgRequest {
        name: "never-created".into(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    match orgs.create_org(request).await {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    }
}

fn listed<'a>(list: &'a Value, id: &str) -> Option<&'a Value> {
    list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
}

/// Audit entries with `action` (exact) and `target`.
fn entries<'a>(audit: &'a Value, action: &str, target: &str) -> Vec<&'a Value> {
    audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == action && e["target"] == target)
        .collect()
}

#[tokio::test]
async fn reader_tokens_read_are_refused_changes_and_revocation_is_immediate() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), ControlPlaneSpec::default())
        .await
        .unwrap();
    let bootstrap = cp.admin_token().unwrap();
    let admin = ctl(&cp, &bootstrap);

    // the bootstrap token is listed by its public id, never its secret
    let bootstrap_id = identify_admin_token(&bootstrap).unwrap().token_id;
    let list = admin.json(&["admin-token", "list"]).await.unwrap();
    let listed_bootstrap = listed(&list, &bootstrap_id).expect("bootstrap token listed");
    assert_eq!(listed_bootstrap["role"], "admin");
    assert_eq!(listed_bootstrap["name"], "bootstrap");
    assert!(
        !list.to_string().contains(&bootstrap),
        "no secret in a listing"
    );

    // a reader reads
    let (reader_id, reader_secret) = create(&admin, "auditor", "reader").await;
    assert!(reader_secret.starts_with("mta_") && reader_id.starts_with("adm_"));
    let reader = ctl(&cp, &reader_secret);
    reader.json(&["org", "list"]).await.unwrap();
    reader.json(&["admin-token", "list"]).await.unwrap();
    reader.json(&["config", "list"]).await.unwrap();
    reader.json(&["audit", "verify"]).await.unwrap();
    reader.json(&["status"]).await.unwrap();

    // and is refused every change, naming its role; the CLI adds the way out
    assert_eq!(
        create_org_code(&cp, &reader_secret).await,
        tonic::Code::PermissionDenied
    );
    let refused = reader.run(&["org", "create", "acme"]).await.unwrap();
    assert!(failed(&refused, "has role reader"), "{refused:?}");
    assert!(
        refused.stderr.contains("needs role admin")
            && refused.stderr.contains("hint:")
            && refused.stderr.contains("admin-token create"),
        "{refused:?}"
    );
    let escalation = reader
        .run(&["admin-token", "create", "--name", "me", "--role", "admin"])
        .await
        .unwrap();
    assert!(failed(&escalation, "has role reader"), "{escalation:?}");
    let orgs = admin.json(&["org", "list"]).await.unwrap();
    assert_eq!(
        orgs["orgs"].as_array().unwrap().len(),
        0,
        "nothing was created"
    );

    // revoked: refused by the very next call
    let revoked = admin
        .json(&["admin-token", "revoke", &reader_id])
        .await
        .unwrap();
    assert_eq!(revoked["status"], "revoked", "{revoked}");
    let after = reader.run(&["org", "list"]).await.unwrap();
    assert!(failed(&after, "is revoked"), "{after:?}");
    assert_eq!(
        create_org_code(&cp, &reader_secret).await,
        tonic::Code::Unauthenticated
    );
    let active = admin.json(&["admin-token", "list"]).await.unwrap();
    assert!(
        listed(&active, &reader_id).is_none(),
        "revoked tokens hidden by default"
    );
    let all = admin.json(&["admin-token", "list", "--all"]).await.unwrap();
    let listed_reader = listed(&all, &reader_id).expect("listed with --all");
    assert_eq!(listed_reader["status"], "revoked");
    assert!(listed_reader["revoked_at"].is_string());

    // the last admin token stays unless forced
    let last = admin
        .run(&["admin-token", "revoke", &bootstrap_id])
        .await
        .unwrap();
    assert!(failed(&last, "last active admin-role token"), "{last:?}");
    assert!(last.stderr.contains("--force"), "{last:?}");

    // an expired token is refused by name
    let expiring = admin
        .json(&[
            "admin-token",
            "create",
            "--name",
            "short",
            "--role",
            "reader",
            "--expires-in",
            "1s",
        ])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let expired = ctl(&cp, expiring["token"].as_str().unwrap())
        .run(&["org", "list"])
        .await
        .unwrap();
    assert!(failed(&expired, "is expired"), "{expired:?}");

    // the bootstrap token keeps working, and its use is recorded
    admin.json(&["org", "create", "acme"]).await.unwrap();
    let deadline = Instant::now() + ADMIN_TOKEN_RELOAD_INTERVAL * 3 + Duration::from_secs(5);
    loop {
        let list = admin.json(&["admin-token", "list"]).await.unwrap();
        if listed(&list, &bootstrap_id).unwrap()["last_used_at"].is_string() {
            break;
        }
        assert!(Instant::now() < deadline, "last use never recorded: {list}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // the audit trail has the creates, the revoke and every refusal
    let audit = admin
        .json(&["audit", "list", "--limit", "100"])
        .await
        .unwrap();
    let outcome = |action: &str, target: &str| -> Vec<String> {
        entries(&audit, action, target)
            .iter()
            .map(|e| e["outcome"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(outcome("admin_token.create", &reader_id), ["ok"], "{audit}");
    assert_eq!(outcome("admin_token.revoke", &reader_id), ["ok"], "{audit}");
    assert_eq!(
        outcome("admin_token.revoke", &bootstrap_id),
        ["denied"],
        "{audit}"
    );
    assert_eq!(
        outcome("admin.call", "memtrace.admin.v1.OrgService/CreateOrg"),
        ["denied", "denied"],
        "{audit}"
    );
    assert_eq!(
        outcome(
            "admin.call",
            "memtrace.admin.v1.AdminTokenService/CreateAdminToken"
        ),
        ["denied"],
        "{audit}"
    );
    let denied = &entries(
        &audit,
        "admin.call",
        "memtrace.admin.v1.OrgService/CreateOrg",
    )[0];
    let details = denied["details"].to_string();
    assert!(
        details.contains(&reader_id) && details.contains("reader"),
        "the entry names the token and its role: {denied}"
    );
    assert!(
        outcome("admin_token.use", &reader_id)
            .iter()
            .all(|o| o == "denied")
            && outcome("admin_token.use", &reader_id).len() == 2,
        "revoked-token calls audited: {audit}"
    );
    admin.json(&["audit", "verify"]).await.unwrap();

    // no admin token secret reaches the log
    let logs = cp.logs();
    for secret in [&bootstrap, &reader_secret] {
        assert!(!logs.contains(secret.as_str()), "an admin token was logged");
    }
    assert!(cp.stop().await.unwrap().success());
}

#[tokio::test]
async fn a_revoked_bootstrap_token_stays_revoked_and_a_new_one_lets_operators_back_in() {
    let dir = tempfile::tempdir().unwrap();
    let spec = ControlPlaneSpec::default();
    let cp = ControlPlane::start(dir.path(), spec.clone()).await.unwrap();
    let bootstrap = cp.admin_token().unwrap();
    let bootstrap_id = identify_admin_token(&bootstrap).unwrap().token_id;
    let (ops_id, ops_secret) = create(&ctl(&cp, &bootstrap), "ops", "admin").await;
    // with another admin token, the leaked bootstrap token can go
    let ops = ctl(&cp, &ops_secret);
    ops.json(&["admin-token", "revoke", &bootstrap_id])
        .await
        .unwrap();
    assert!(failed(
        &ctl(&cp, &bootstrap).run(&["org", "list"]).await.unwrap(),
        "is revoked"
    ));
    // forcing out the last admin token locks every change out
    ops.json(&["admin-token", "revoke", &ops_id, "--force"])
        .await
        .unwrap();
    assert!(failed(
        &ops.run(&["org", "list"]).await.unwrap(),
        "is revoked"
    ));
    cp.stop().await.unwrap();

    // the same bootstrap token is not registered again
    let cp = ControlPlane::start(dir.path(), spec.clone()).await.unwrap();
    assert!(failed(
        &ctl(&cp, &bootstrap).run(&["org", "list"]).await.unwrap(),
        "is revoked"
    ));
    assert!(
        cp.logs()
            .contains("was revoked and is not registered again"),
        "{}",
        cp.logs()
    );
    cp.stop().await.unwrap();

    // a new one is: that is how operators get back in
    let fresh = memtrace_common::credentials::generate_admin_token().to_string();
    let cp = ControlPlane::start(
        dir.path(),
        ControlPlaneSpec {
            admin_token: Some(fresh.clone()),
            ..spec
        },
    )
    .await
    .unwrap();
    ctl(&cp, &fresh)
        .json(&["org", "create", "back"])
        .await
        .unwrap();
    assert!(cp.stop().await.unwrap().success());
}

#[tokio::test]
async fn replicas_sharing_a_database_follow_creates_and_revocations() {
    let pg = tokio::task::spawn_blocking(PgServer::start)
        .await
        .unwrap()
        .unwrap();
    let spec = ControlPlaneSpec {
        database_url: Some(pg.fresh_database("tokens").unwrap()),
        ..ControlPlaneSpec::default()
    };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = tokio::join!(
        ControlPlane::start(dir_a.path(), spec.clone()),
        ControlPlane::start(dir_b.path(), spec.clone())
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let admin_a = ctl(&a, &a.admin_token().unwrap());
    let (reader_id, reader_secret) = create(&admin_a, "replicated", "reader").await;
    // bound: one reload interval and a database read; generous for a busy machine
    let bound = ADMIN_TOKEN_RELOAD_INTERVAL * 2 + Duration::from_secs(4);

    let on_b = ctl(&b, &reader_secret);
    let started = Instant::now();
    while !on_b.run(&["org", "list"]).await.unwrap().success {
        assert!(started.elapsed() < bound, "b never accepted the new token");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    admin_a
        .json(&["admin-token", "revoke", &reader_id])
        .await
        .unwrap();
    let revoked_at = Instant::now();
    assert!(failed(
        &ctl(&a, &reader_secret).run(&["org", "list"]).await.unwrap(),
        "is revoked"
    ));
    loop {
        let out = on_b.run(&["org", "list"]).await.unwrap();
        if failed(&out, "is revoked") {
            break;
        }
        assert!(out.success, "{out:?}");
        assert!(
            revoked_at.elapsed() < bound,
            "b still accepts a token revoked on a {:?} ago",
            revoked_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}
