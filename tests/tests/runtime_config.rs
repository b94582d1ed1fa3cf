//! Runtime configuration and the audit trail end to end: a real control
//! plane process driven by the real `memtracectl` — set/get/list/reset with
//! revisions, error codes and messages, locked keys and their audited
//! denial, export/import with dry run and conflicts, rollback, chain
//! verification, masking of sensitive values, and precedence of the database
//! over the environment across a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_tests::cli::Ctl;
use memtrace_tests::control_plane::{ControlPlane, ControlPlaneSpec};
use serde_json::Value;

fn ctl_for(cp: &ControlPlane) -> Ctl {
    Ctl {
        server: cp.url(),
        token: cp.admin_token().unwrap(),
        ca_file: None,
    }
}

fn spec_with(env: &[(&str, &str)]) -> ControlPlaneSpec {
    let mut spec = ControlPlaneSpec::default();
    for (k, v) in env {
        spec.extra_env.insert((*k).to_owned(), (*v).to_owned());
    }
    spec
}

/// Runs a command expected to fail; returns stderr.
async fn fails(ctl: &Ctl, args: &[&str]) -> String {
    let out = ctl.run(args).await.unwrap();
    assert!(!out.success, "{args:?} should fail: {out:?}");
    assert_eq!(out.code, Some(1), "{out:?}");
    out.stderr
}

fn setting<'a>(list: &'a Value, key: &str) -> &'a Value {
    list["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["key"] == key)
        .unwrap_or_else(|| panic!("{key} not listed: {list}"))
}

#[tokio::test]
async fn config_session_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec_with(&[(
        "MEMTRACE_CONTROL_PLANE_LOCKED_SETTINGS",
        "log.level,dedup.key_content_bytes",
    )]);
    let cp = ControlPlane::start(dir.path(), spec).await.unwrap();
    let ctl = ctl_for(&cp);

    // list and get: defaults
    let list = ctl.json(&["config", "list"]).await.unwrap();
    let batch = setting(&list, "arc.write_batch_size");
    assert_eq!(
        (batch["value"].clone(), batch["source"].clone()),
        (100.into(), "default".into())
    );
    assert_eq!(setting(&list, "log.level")["locked"], true);
    assert_eq!(setting(&list, "telemetry.otlp_headers")["sensitive"], true);
    let table = ctl.run(&["config", "list"]).await.unwrap();
    assert!(table.stdout.starts_with("KEY"), "{table:?}");

    // set: a revision, then get shows the global value
    let set = ctl
        .json(&["config", "set", "arc.write_batch_size", "500"])
        .await
        .unwrap();
    assert_eq!(set["changed"], true, "{set}");
    let first_revision = set["revision"].as_u64().expect("published with a revision");
    assert!(first_revision > 0);
    assert_eq!(
        (set["old_value"].clone(), set["value"].clone()),
        ("100".into(), 500.into())
    );
    let text = ctl
        .run(&["config", "set", "arc.write_flush_interval_ms", "2s"])
        .await
        .unwrap();
    assert!(
        text.success && text.stdout.contains("published at revision"),
        "{text:?}"
    );
    let got = ctl
        .json(&["config", "get", "arc.write_flush_interval_ms"])
        .await
        .unwrap();
    assert_eq!(
        (got["value"].clone(), got["source"].clone()),
        (2000.into(), "global".into())
    );
    let again = ctl
        .json(&["config", "set", "arc.write_batch_size", "500"])
        .await
        .unwrap();
    assert_eq!(again["changed"], false);

    // unknown key: NOT_FOUND naming the close match
    let err = fails(&ctl, &["config", "get", "arc.write_batch"]).await;
    assert!(
        err.contains("unknown setting") && err.contains("did you mean arc.write_batch_size"),
        "{err}"
    );
    assert!(err.contains("memtracectl config list"), "hint: {err}");
    let err = fails(&ctl, &["config", "set", "dedup.windw_hours", "5"]).await;
    assert!(err.contains("dedup.window_hours"), "{err}");

    // wrong type and out of range: INVALID_ARGUMENT naming the type and range; nothing changes
    let err = fails(&ctl, &["config", "set", "arc.write_batch_size", "0"]).await;
    assert!(err.contains("1..=100000"), "{err}");
    let err = fails(&ctl, &["config", "set", "arc.write_batch_size", "lots"]).await;
    assert!(
        err.contains("an integer") && err.contains("\"lots\""),
        "{err}"
    );
    let err = fails(&ctl, &["config", "set", "dedup.enabled", "maybe"]).await;
    assert!(err.contains("boolean"), "{err}");
    let err = fails(&ctl, &["config", "set", "arc.write_linger_ms", "-5"]).await;
    assert!(err.contains("0..=1000"), "{err}");
    let got = ctl
        .json(&["config", "get", "arc.write_batch_size"])
        .await
        .unwrap();
    assert_eq!(got["value"], 500, "refused changes change nothing");

    // locked: PERMISSION_DENIED, and the denial is audited
    let err = fails(&ctl, &["config", "set", "log.level", "debug"]).await;
    assert!(
        err.contains("locked") && err.contains("locked_settings"),
        "{err}"
    );
    let err = fails(&ctl, &["config", "reset", "dedup.key_content_bytes"]).await;
    assert!(err.contains("locked"), "{err}");
    let audit = ctl
        .json(&["audit", "list", "--outcome", "denied"])
        .await
        .unwrap();
    let denied = audit["entries"].as_array().unwrap();
    assert_eq!(denied.len(), 2, "{audit}");
    assert_eq!(
        (denied[1]["action"].clone(), denied[1]["target"].clone()),
        ("config.set".into(), "log.level".into())
    );
    assert_eq!(denied[1]["details"]["attempted"], "debug");
    assert!(denied[1]["actor"].as_str().unwrap().starts_with("fp-"));

    // per-org overrides
    let org = ctl.json(&["org", "create", "tenant-a"]).await.unwrap();
    let org_id = org["id"].as_str().unwrap().to_owned();
    let set = ctl
        .json(&[
            "config",
            "set",
            "limits.requests_per_second",
            "5",
            "--org",
            &org_id,
        ])
        .await
        .unwrap();
    assert_eq!(set["source"], "org");
    let listed = ctl
        .json(&["config", "list", "--org", &org_id])
        .await
        .unwrap();
    assert_eq!(setting(&listed, "limits.requests_per_second")["value"], 5);
    assert_eq!(setting(&listed, "arc.write_batch_size")["source"], "global");
    let err = fails(
        &ctl,
        &["config", "set", "log.level", "warn", "--org", &org_id],
    )
    .await;
    assert!(err.contains("locked"), "{err}");
    let err = fails(
        &ctl,
        &[
            "config",
            "set",
            "telemetry.otlp_endpoint",
            "x",
            "--org",
            &org_id,
        ],
    )
    .await;
    assert!(err.contains("cannot be overridden per org"), "{err}");

    // export → import --dry-run: nothing to change
    let file = dir.path().join("settings.json");
    let file_arg = file.to_str().unwrap();
    let exported = ctl
        .json(&["config", "export", "--file", file_arg])
        .await
        .unwrap();
    // batch size, flush interval and the org override (the harness pins its
    // log filter with RUST_LOG, so log.level is seeded at its default)
    assert_eq!(exported["values"], 3, "{exported}");
    let dry = ctl
        .json(&["config", "import", file_arg, "--dry-run"])
        .await
        .unwrap();
    assert_eq!(dry["changes"].as_array().unwrap().len(), 0, "{dry}");
    assert_eq!(dry["conflicts"].as_array().unwrap().len(), 0, "{dry}");
    assert_eq!(dry["unchanged"], 3);

    // a modified document: the change and the conflicts
    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(doc["version"], 1);
    assert!(
        doc["exported_at"].is_string() && doc["source"].is_string(),
        "{doc}"
    );
    doc["settings"]["arc.write_batch_size"] = 800.into();
    doc["settings"]["log.level"] = "warn".into();
    doc["settings"]["arc.write_batchsize"] = 1.into();
    std::fs::write(&file, doc.to_string()).unwrap();
    let dry = ctl
        .json(&["config", "import", file_arg, "--dry-run"])
        .await
        .unwrap();
    let changes = dry["changes"].as_array().unwrap();
    assert!(
        changes
            .iter()
            .any(|c| c["key"] == "arc.write_batch_size" && c["old"] == "500" && c["new"] == "800"),
        "{dry}"
    );
    let conflicts = dry["conflicts"].as_array().unwrap();
    assert!(
        conflicts
            .iter()
            .any(|c| c["key"] == "log.level" && c["kind"] == "locked"),
        "{dry}"
    );
    assert!(
        conflicts
            .iter()
            .any(|c| c["key"] == "arc.write_batchsize" && c["kind"] == "unknown_key"),
        "{dry}"
    );
    let table = ctl
        .run(&["config", "import", file_arg, "--dry-run"])
        .await
        .unwrap();
    assert!(
        table.stdout.contains("conflicts:") && table.stdout.contains("nothing was applied"),
        "{table:?}"
    );
    let err = fails(&ctl, &["config", "import", file_arg]).await;
    assert!(
        err.contains("import refused") && err.contains("log.level"),
        "{err}"
    );
    let got = ctl
        .json(&["config", "get", "arc.write_batch_size"])
        .await
        .unwrap();
    assert_eq!(got["value"], 500, "a refused import applies nothing");

    // without the conflicts it applies
    let settings = doc["settings"].as_object_mut().unwrap();
    settings.remove("log.level");
    settings.remove("arc.write_batchsize");
    std::fs::write(&file, doc.to_string()).unwrap();
    let applied = ctl.json(&["config", "import", file_arg]).await.unwrap();
    assert_eq!(applied["applied"], true, "{applied}");
    assert!(applied["revision"].as_u64().unwrap() > first_revision);
    let got = ctl
        .json(&["config", "get", "arc.write_batch_size"])
        .await
        .unwrap();
    assert_eq!(got["value"], 800);

    // rollback the import's change from the audit trail
    let history = ctl
        .json(&["config", "audit", "--key", "arc.write_batch_size"])
        .await
        .unwrap();
    let entries = history["entries"].as_array().unwrap();
    assert_eq!(entries[0]["action"], "config.import", "{history}");
    assert_eq!(
        (
            entries[0]["details"]["old"].clone(),
            entries[0]["details"]["new"].clone()
        ),
        (500.into(), 800.into())
    );
    let seq = entries[0]["seq"].as_u64().unwrap().to_string();
    let rolled = ctl.json(&["config", "rollback", &seq]).await.unwrap();
    assert_eq!(
        (rolled["old_value"].clone(), rolled["value"].clone()),
        ("800".into(), 500.into())
    );
    assert!(rolled["revision"].as_u64().is_some());
    let err = fails(&ctl, &["config", "rollback", "999999"]).await;
    assert!(err.contains("not found"), "{err}");

    // reset: back to the default
    let reset = ctl
        .json(&["config", "reset", "arc.write_batch_size"])
        .await
        .unwrap();
    assert_eq!(
        (reset["value"].clone(), reset["source"].clone()),
        (100.into(), "default".into())
    );
    assert!(reset["revision"].as_u64().is_some());

    // sensitive values: masked everywhere, never exported or audited or logged
    let secret = "authorization=Bearer otlp-sekrit-0123456789";
    let set = ctl
        .run(&["config", "set", "telemetry.otlp_headers", secret])
        .await
        .unwrap();
    assert!(set.success, "{set:?}");
    assert!(
        set.stdout.contains("***") && !set.stdout.contains("sekrit"),
        "{set:?}"
    );
    assert!(
        set.stdout.contains("restarts"),
        "restart-required note: {set:?}"
    );
    let got = ctl
        .json(&["config", "get", "telemetry.otlp_headers"])
        .await
        .unwrap();
    assert_eq!(
        (got["value"].clone(), got["masked"].clone()),
        ("***".into(), true.into())
    );
    let export = ctl.run(&["config", "export"]).await.unwrap();
    assert!(
        export.success && !export.stdout.contains("sekrit"),
        "{export:?}"
    );
    assert!(
        export.stdout.contains("telemetry.otlp_headers"),
        "listed as excluded: {export:?}"
    );
    let audit = ctl
        .run(&["audit", "list", "--limit", "1000", "-o", "json"])
        .await
        .unwrap();
    assert!(!audit.stdout.contains("sekrit"), "{audit:?}");
    assert!(
        !cp.logs().contains("sekrit"),
        "sensitive value in the control plane log"
    );

    // the chain verifies
    let verified = ctl.json(&["audit", "verify"]).await.unwrap();
    assert_eq!(verified["ok"], true, "{verified}");
    assert!(verified["entries"].as_u64().unwrap() >= 10, "{verified}");
    let text = ctl.run(&["audit", "verify"]).await.unwrap();
    assert!(
        text.success && text.stdout.starts_with("audit chain ok"),
        "{text:?}"
    );

    let status = cp.stop().await.unwrap();
    assert!(status.success(), "{status}");
    let db = std::fs::read(dir.path().join("data/memtrace.db")).unwrap_or_default();
    assert!(!db.is_empty());
}

#[tokio::test]
async fn database_wins_over_the_environment_after_the_first_start() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec_with(&[("MEMTRACE_ARC_WRITE_BATCH_SIZE", "250")]);

    // first start on a fresh database: seeded from the environment
    let cp = ControlPlane::start(dir.path(), spec.clone()).await.unwrap();
    let ctl = ctl_for(&cp);
    let got = ctl
        .json(&["config", "get", "arc.write_batch_size"])
        .await
        .unwrap();
    assert_eq!(
        (got["value"].clone(), got["source"].clone()),
        (250.into(), "global".into())
    );
    let history = ctl
        .json(&["config", "audit", "--key", "arc.write_batch_size"])
        .await
        .unwrap();
    let seed = &history["entries"][0];
    assert_eq!(
        (seed["action"].clone(), seed["actor"].clone()),
        ("config.seed".into(), "system".into())
    );
    assert_eq!(seed["details"]["new"], 250);

    let set = ctl
        .json(&["config", "set", "arc.write_batch_size", "500"])
        .await
        .unwrap();
    assert_eq!(set["value"], 500);
    cp.stop().await.unwrap();

    // restart with the environment still at 250: the database wins
    let cp = ControlPlane::start(dir.path(), spec).await.unwrap();
    let ctl = ctl_for(&cp);
    let got = ctl
        .json(&["config", "get", "arc.write_batch_size"])
        .await
        .unwrap();
    assert_eq!(
        (got["value"].clone(), got["source"].clone()),
        (500.into(), "global".into())
    );
    let history = ctl
        .json(&["config", "audit", "--key", "arc.write_batch_size"])
        .await
        .unwrap();
    let actions: Vec<&str> = history["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["config.set", "config.seed"],
        "the restart wrote nothing"
    );
    assert!(
        cp.logs().contains("the database wins"),
        "the differing static value is reported"
    );
    let verified = ctl.json(&["audit", "verify"]).await.unwrap();
    assert_eq!(verified["ok"], true, "{verified}");
    cp.stop().await.unwrap();
}

#[tokio::test]
async fn bad_static_settings_stop_the_first_start() {
    let dir = tempfile::tempdir().unwrap();
    let master_key = memtrace_common::keys::generate_key_b64();
    let db_path = dir.path().join("cp.db");
    let out = memtrace_tests::control_plane::run_to_exit(
        dir.path(),
        &[
            ("MEMTRACE_MASTER_KEY", master_key.as_str()),
            ("MEMTRACE_AUTH_DB_PATH", db_path.to_str().unwrap()),
            ("MEMTRACE_CONTROL_PLANE_LOCKED_SETTINGS", "log.levle"),
        ],
    )
    .await
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("locked_settings") && stderr.contains("log.level"),
        "{stderr}"
    );
}

/// Two replicas on one PostgreSQL database, changing settings at the same
/// time: the audit chain stays one chain, and both replicas verify it.
#[tokio::test]
async fn two_replicas_on_postgres_never_fork_the_chain() {
    use memtrace_tests::postgres::PgServer;
    let pg = tokio::task::spawn_blocking(PgServer::start)
        .await
        .unwrap()
        .unwrap();
    let url = pg.fresh_database("config").unwrap();
    let spec = ControlPlaneSpec {
        database_url: Some(url.clone()),
        ..ControlPlaneSpec::default()
    };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = tokio::join!(
        ControlPlane::start(dir_a.path(), spec.clone()),
        ControlPlane::start(dir_b.path(), spec)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let (ctl_a, ctl_b) = (ctl_for(&a), ctl_for(&b));

    let keys = [
        "arc.write_batch_size",
        "limits.max_queued_events",
        "limits.burst",
        "dedup.window_hours",
    ];
    let mut runs = Vec::new();
    for round in 0..6u32 {
        for (i, key) in keys.iter().enumerate() {
            let ctl = if (round as usize + i).is_multiple_of(2) {
                &ctl_a
            } else {
                &ctl_b
            };
            let value = (10 + round * 10 + i as u32).to_string();
            runs.push(async move { ctl.run(&["config", "set", key, &value]).await.unwrap() });
        }
    }
    let outputs = futures_join(runs).await;
    for out in &outputs {
        assert!(out.success, "{out:?}");
    }
    for ctl in [&ctl_a, &ctl_b] {
        let verified = ctl.json(&["audit", "verify"]).await.unwrap();
        assert_eq!(verified["ok"], true, "{verified}");
        assert!(verified["entries"].as_u64().unwrap() >= 24, "{verified}");
    }
    let seqs = pg
        .psql(
            &url,
            "SELECT count(*) = max(seq) AND min(seq) = 1 FROM audit_log",
        )
        .unwrap();
    assert_eq!(seqs.trim(), "t", "sequence numbers are contiguous from 1");
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

/// Drives every future concurrently on this task.
async fn futures_join<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in pinned.iter_mut().zip(results.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    results.into_iter().flatten().collect()
}
