//! Startup refusals, probes, gRPC health and reflection, admin auth codes,
//! legacy `[arc]` migration, restarts on SQLite.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_proto::admin::v1 as pb;
use memtrace_tests::control_plane::{ControlPlane, ControlPlaneSpec, run_to_exit};
use tonic::metadata::MetadataValue;

async fn refused(env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = run_to_exit(dir.path(), env).await.unwrap();
    assert!(
        !out.status.success(),
        "process must refuse to start: {out:?}"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn refuses_to_start_without_a_valid_master_key() {
    let err = refused(&[]).await;
    assert!(err.contains("MEMTRACE_MASTER_KEY is not set"), "{err}");
    let err = refused(&[("MEMTRACE_MASTER_KEY", "%%%not-base64%%%")]).await;
    assert!(
        err.contains("MEMTRACE_MASTER_KEY is not valid base64"),
        "{err}"
    );
    let err = refused(&[("MEMTRACE_MASTER_KEY", "c2hvcnQta2V5")]).await;
    assert!(
        err.contains("MEMTRACE_MASTER_KEY must decode to exactly 32 bytes"),
        "{err}"
    );
    let key = memtrace_common::keys::generate_key_b64();
    let err = refused(&[
        ("MEMTRACE_MASTER_KEY", &key),
        ("MEMTRACE_BOOTSTRAP_ADMIN_TOKEN", "too-short"),
    ])
    .await;
    assert!(
        err.contains("MEMTRACE_BOOTSTRAP_ADMIN_TOKEN must be at least 32"),
        "{err}"
    );
    let err = refused(&[
        ("MEMTRACE_MASTER_KEY", &key),
        ("MEMTRACE_SERVER_PORT", "ninety"),
    ])
    .await;
    assert!(
        err.contains("MEMTRACE_SERVER_PORT") && err.contains("integer"),
        "{err}"
    );
}

#[tokio::test]
async fn probes_health_reflection_and_admin_auth() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), ControlPlaneSpec::default())
        .await
        .unwrap();
    let http = memtrace_tests::http_client();
    let health = http
        .get(format!("{}/health", cp.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready: serde_json::Value = http
        .get(format!("{}/ready", cp.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ready");
    // the newest version among the files (versions can skip a number
    // taken by a migration of a branch not merged yet)
    let migrations = std::fs::read_dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../control-plane/migrations/sqlite"
    ))
    .unwrap()
    .filter_map(|entry| {
        let name = entry.unwrap().file_name().into_string().unwrap();
        name.split('_').next()?.parse::<i64>().ok()
    })
    .max()
    .unwrap();
    assert_eq!(ready["migration"], migrations, "every migration applied");

    let channel = tonic::transport::Endpoint::from_shared(cp.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in [
        "",
        "memtrace.admin.v1.OrgService",
        "memtrace.admin.v1.ApiKeyService",
    ] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service}"
        );
    }

    let mut orgs = pb::org_service_client::OrgServiceClient::new(channel.clone());
    let missing = orgs.list_orgs(pb::ListOrgsRequest {}).await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::Unauthenticated);
    let mut bad = tonic::Request::new(pb::ListOrgsRequest {});
    bad.metadata_mut()
        .insert("authorization", MetadataValue::from_static("Bearer nope"));
    assert_eq!(
        orgs.list_orgs(bad).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
    let key = memtrace_common::credentials::generate_api_key();
    let mut data_key = tonic::Request::new(pb::ListOrgsRequest {});
    data_key.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", key.token.as_str()).parse().unwrap(),
    );
    assert_eq!(
        orgs.list_orgs(data_key).await.unwrap_err().code(),
        tonic::Code::PermissionDenied
    );
    let mut good = tonic::Request::new(pb::CreateOrgRequest {
        name: "  ".into(),
        ..Default::default()
    });
    good.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", cp.admin_token().unwrap())
            .parse()
            .unwrap(),
    );
    let invalid = orgs.create_org(good).await.unwrap_err();
    assert_eq!(invalid.code(), tonic::Code::InvalidArgument);
    assert!(invalid.message().contains("name"), "{invalid:?}");
    assert!(cp.stop().await.unwrap().success());
}

#[tokio::test]
async fn expected_migration_pin_gates_readiness() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = ControlPlaneSpec::default();
    spec.extra_env
        .insert("MEMTRACE_EXPECTED_MIGRATION".into(), "99".into());
    let cp = ControlPlane::spawn(dir.path(), spec).await.unwrap();
    let http = memtrace_tests::http_client();
    // wait until startup finished (the admin api answers), then check /ready
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !cp.logs().contains("control plane ready") {
        assert!(
            std::time::Instant::now() < deadline,
            "never finished startup: {}",
            cp.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let response = http
        .get(format!("{}/ready", cp.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["reason"].as_str().unwrap().contains("requires 99"),
        "{body}"
    );
    assert_eq!(
        http.get(format!("{}/health", cp.url()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn generated_admin_token_is_printed_once_and_works() {
    let dir = tempfile::tempdir().unwrap();
    let spec = ControlPlaneSpec {
        admin_token: None,
        ..ControlPlaneSpec::default()
    };
    let cp = ControlPlane::start(dir.path(), spec.clone()).await.unwrap();
    let token = cp.admin_token().unwrap();
    assert!(token.starts_with("mta_"));
    assert!(
        !cp.logs().contains(&token),
        "the token is printed on stdout, never logged"
    );
    let ctl = memtrace_tests::cli::Ctl {
        server: cp.url(),
        token: token.clone(),
        ca_file: None,
    };
    ctl.json(&["org", "list"]).await.unwrap();
    cp.stop().await.unwrap();

    // second start on the same database: no new token, the old one still works
    let cp = ControlPlane::start(dir.path(), spec).await.unwrap();
    let stdout = std::fs::read_to_string(&cp.stdout_path).unwrap();
    assert!(!stdout.contains("mta_"), "no second token: {stdout}");
    let ctl = memtrace_tests::cli::Ctl {
        server: cp.url(),
        token,
        ca_file: None,
    };
    ctl.json(&["org", "list"]).await.unwrap();
}

#[tokio::test]
async fn legacy_arc_settings_migrate_into_org_default_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = ControlPlaneSpec::default();
    for (k, v) in [
        ("MEMTRACE_ARC_URL", "http://127.0.0.1:9"),
        ("MEMTRACE_ARC_API_KEY", "legacy-arc-key-abcdef"),
        ("MEMTRACE_ARC_DATABASE", "memories"),
    ] {
        spec.extra_env.insert(k.into(), v.into());
    }
    let cp = ControlPlane::start(dir.path(), spec.clone()).await.unwrap();
    assert!(
        cp.logs()
            .contains("migrated legacy [arc] settings into org_default"),
        "{}",
        cp.logs()
    );
    let ctl = memtrace_tests::cli::Ctl {
        server: cp.url(),
        token: cp.admin_token().unwrap(),
        ca_file: None,
    };
    let shown = ctl.json(&["org", "show-arc", "org_default"]).await.unwrap();
    assert_eq!(shown["database"], "memories");
    assert_eq!(shown["api_key_masked"], "lega***cdef");
    assert!(!cp.logs().contains("legacy-arc-key-abcdef"));
    cp.stop().await.unwrap();

    let cp = ControlPlane::start(dir.path(), spec).await.unwrap();
    assert!(
        !cp.logs().contains("migrated legacy"),
        "idempotent: {}",
        cp.logs()
    );
    let ctl = memtrace_tests::cli::Ctl {
        server: cp.url(),
        token: cp.admin_token().unwrap(),
        ca_file: None,
    };
    let orgs = ctl.json(&["org", "list"]).await.unwrap();
    assert_eq!(orgs["orgs"].as_array().unwrap().len(), 1, "{orgs}");
}

#[tokio::test]
async fn master_key_rotation_rewraps_while_serving() {
    let dir = tempfile::tempdir().unwrap();
    let old = ControlPlaneSpec::default();
    let cp = ControlPlane::start(dir.path(), old.clone()).await.unwrap();
    let ctl = memtrace_tests::cli::Ctl {
        server: cp.url(),
        token: cp.admin_token().unwrap(),
        ca_file: None,
    };
    let org = ctl.json(&["org", "create", "rot"]).await.unwrap();
    let org_id = org["id"].as_str().unwrap().to_owned();
    ctl.json(&[
        "org",
        "add-arc",
        &org_id,
        "--url",
        "http://127.0.0.1:9",
        "--database",
        "d",
        "--api-key",
        "rotating-key-123456",
    ])
    .await
    .unwrap();
    cp.stop().await.unwrap();

    // new key alone cannot open the old envelope: a clear precondition error
    let new_only = ControlPlaneSpec {
        master_key: memtrace_common::keys::generate_key_b64(),
        ..old.clone()
    };
    let cp = ControlPlane::start(dir.path(), new_only.clone())
        .await
        .unwrap();
    let ctl = memtrace_tests::cli::Ctl {
        server: cp.url(),
        token: cp.admin_token().unwrap(),
        ca_file: None,
    };
    let out = ctl.run(&["org", "show-arc", &org_id]).await.unwrap();
    assert!(
        !out.success && out.stderr.contains("MEMTRACE_MASTER_KEYS_PREVIOUS"),
        "{out:?}"
    );
    cp.stop().await.unwrap();

    // new key + old as previous: serves, rotates, and afterwards the old key can go
    let both = ControlPlaneSpec {
        previous_master_keys: vec![old.master_key.clone()],
        ..new_only.clone()
    };
    let cp = ControlPlane::start(dir.path(), both).await.unwrap();
    let ctl = memtrace_tests::cli::Ctl {
        server: cp.url(),
        token: cp.admin_token().unwrap(),
        ca_file: None,
    };
    assert_eq!(
        ctl.json(&["org", "show-arc", &org_id]).await.unwrap()["api_key_masked"],
        "rota***3456"
    );
    // the arc key, the erasure receipt signing key and the agent-token
    // signing key
    let rotated = ctl.json(&["master-key", "rotate"]).await.unwrap();
    assert_eq!(rotated["rewrapped"], 3, "{rotated}");
    let rotated = ctl.json(&["master-key", "rotate"]).await.unwrap();
    assert_eq!(
        (
            rotated["rewrapped"].clone(),
            rotated["already_current"].clone()
        ),
        (0.into(), 3.into()),
        "{rotated}"
    );
    cp.stop().await.unwrap();

    let cp = ControlPlane::start(dir.path(), new_only).await.unwrap();
    let ctl = memtrace_tests::cli::Ctl {
        server: cp.url(),
        token: cp.admin_token().unwrap(),
        ca_file: None,
    };
    assert_eq!(
        ctl.json(&["org", "show-arc", &org_id]).await.unwrap()["api_key_masked"],
        "rota***3456"
    );
    // the receipt signing key survived the master key's retirement: still
    // one key, and no record left under a key this control plane lacks
    let keys = ctl.json(&["erasure", "keys"]).await.unwrap();
    assert_eq!(keys["keys"].as_array().unwrap().len(), 1, "{keys}");
    let status = ctl.json(&["master-key", "status"]).await.unwrap();
    assert!(
        status["versions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["loaded"] == true),
        "{status}"
    );
}
