//! The store conformance suite against every backend: SQLite and a real
//! PostgreSQL server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_control_plane::store::{SqlStore, conformance};
use memtrace_tests::postgres::PgServer;

#[tokio::test]
async fn sqlite_backend() {
    let dir = tempfile::tempdir().unwrap();
    let url = SqlStore::sqlite_url(dir.path().join("cp.db").to_str().unwrap());
    let store = SqlStore::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    conformance::run_all(&store).await;
}

#[tokio::test]
async fn postgres_backend() {
    let pg = tokio::task::spawn_blocking(PgServer::start)
        .await
        .unwrap()
        .unwrap();
    let url = pg.fresh_database("conformance").unwrap();
    let store = SqlStore::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    conformance::run_all(&store).await;
    // migrating again is a no-op
    store.migrate().await.unwrap();
    conformance::run_all(&store).await;
}

#[tokio::test]
async fn sqlite_admin_tokens_stored_before_ids_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let url = SqlStore::sqlite_url(dir.path().join("legacy.db").to_str().unwrap());
    let store = SqlStore::connect(&url).await.unwrap();
    conformance::legacy_admin_tokens_keep_working(&store).await;
}

#[tokio::test]
async fn postgres_admin_tokens_stored_before_ids_keep_working() {
    let pg = tokio::task::spawn_blocking(PgServer::start)
        .await
        .unwrap()
        .unwrap();
    let url = pg.fresh_database("legacy").unwrap();
    let store = SqlStore::connect(&url).await.unwrap();
    conformance::legacy_admin_tokens_keep_working(&store).await;
}

#[tokio::test]
async fn control_plane_on_postgres_survives_restart_and_shares_state() {
    use memtrace_tests::cli::Ctl;
    use memtrace_tests::control_plane::{ControlPlane, ControlPlaneSpec};
    let pg = tokio::task::spawn_blocking(PgServer::start)
        .await
        .unwrap()
        .unwrap();
    let url = pg.fresh_database("cp").unwrap();
    let spec = ControlPlaneSpec {
        database_url: Some(url),
        ..ControlPlaneSpec::default()
    };
    // two replicas on one database, started together: migrations serialise
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = tokio::join!(
        ControlPlane::start(dir_a.path(), spec.clone()),
        ControlPlane::start(dir_b.path(), spec.clone())
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let ctl_a = Ctl {
        server: a.url(),
        token: a.admin_token().unwrap(),
        ca_file: None,
    };
    let ctl_b = Ctl {
        server: b.url(),
        token: b.admin_token().unwrap(),
        ca_file: None,
    };
    let org = ctl_a.json(&["org", "create", "pg-org"]).await.unwrap();
    let org_id = org["id"].as_str().unwrap().to_owned();
    ctl_b
        .json(&[
            "org",
            "add-arc",
            &org_id,
            "--url",
            "http://127.0.0.1:9",
            "--database",
            "d",
            "--api-key",
            "pg-arc-key-9876",
        ])
        .await
        .unwrap();
    assert_eq!(
        ctl_a.json(&["org", "show-arc", &org_id]).await.unwrap()["api_key_masked"],
        "pg-a***9876"
    );
    a.stop().await.unwrap();
    b.stop().await.unwrap();
    let c = ControlPlane::start(dir_a.path(), spec).await.unwrap();
    let ctl_c = Ctl {
        server: c.url(),
        token: c.admin_token().unwrap(),
        ca_file: None,
    };
    let orgs = ctl_c.json(&["org", "list"]).await.unwrap();
    assert_eq!(orgs["orgs"][0]["has_arc_binding"], true, "{orgs}");
    let rows = pg.psql(&pg.database_url("cp"), "SELECT count(*) FROM arc_bindings WHERE position('pg-arc-key-9876' in encode(api_key_envelope, 'escape')) > 0").unwrap();
    assert_eq!(rows.trim(), "0", "no plaintext arc key in postgres");
}
