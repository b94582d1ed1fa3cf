//! `log.level` is live: `memtracectl config set log.level debug` turns a
//! running worker's debug lines on (its Arc writes log "arc write ok" at
//! debug) and a control plane's own filter follows; `warn` turns them off
//! again — no restart; `RUST_LOG` pins a process's filter. Real processes:
//! etcd, the control plane, a worker and the Arc stand-in.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_tests::api::Api;
use memtrace_tests::cli::Ctl;
use memtrace_tests::cluster::{Cluster, arc_with_token, eventually};
use memtrace_tests::control_plane::{ControlPlane, ControlPlaneSpec};
use memtrace_tests::worker::Worker;
use serde_json::json;
use std::time::Duration;

const PREFIX: &str = "/memtrace-log-level/v1/";
const DB: &str = "loglevel";
const TOKEN: &str = "arc-log-level-token-0123456789";
const DEBUG_LINE: &str = "arc write ok";

/// Writes one memory (acknowledged after Arc stored it).
async fn write(api: &Api, n: u32) {
    let (s, b) = api
        .post(
            "/api/v1/memories",
            json!({"agent_id": "logged", "content": format!("memory {n}")}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
}

fn debug_lines(worker: &Worker) -> usize {
    worker.logs().matches(DEBUG_LINE).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_level_changes_apply_without_a_restart() {
    let c = Cluster::start(PREFIX).await.unwrap();
    let arc = arc_with_token(TOKEN, DB).await.unwrap();
    let org = c.org("logged").await.unwrap();
    c.add_arc(&org, &arc.url(), DB, Some(TOKEN)).await.unwrap();
    let (key, _) = c.key(&org, "read,write").await.unwrap();
    let worker = c.worker("log-level", &[]).await.unwrap();
    let api = Api::new(&worker, Some(&key));

    // the default (info): no debug lines
    write(&api, 0).await;
    assert_eq!(debug_lines(&worker), 0, "{}", worker.logs());

    let revision = c.set_config("log.level", "debug").await.unwrap();
    c.wait_applied(revision).await.unwrap();
    let mut n = 1;
    eventually(
        "the worker logs at debug",
        Duration::from_secs(20),
        async || {
            write(&api, n).await;
            n += 1;
            anyhow::ensure!(debug_lines(&worker) > 0, "no debug line yet");
            Ok(())
        },
    )
    .await
    .unwrap();
    assert!(
        worker.logs().contains("log level changed"),
        "{}",
        worker.logs()
    );
    // warn: the debug lines stop (the change itself is logged at warn)
    let revision = c.set_config("log.level", "warn").await.unwrap();
    c.wait_applied(revision).await.unwrap();
    eventually(
        "the worker is at warn",
        Duration::from_secs(20),
        async || {
            anyhow::ensure!(
                worker.logs().matches("log level changed").count() >= 2,
                "not yet"
            );
            Ok(())
        },
    )
    .await
    .unwrap();
    let before = debug_lines(&worker);
    for m in 100..105 {
        write(&api, m).await;
    }
    assert_eq!(debug_lines(&worker), before, "debug lines after warn");
}

fn debug_level_lines(logs: &str) -> usize {
    logs.matches("\"level\":\"DEBUG\"").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_follows_log_level_unless_rust_log_pins_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = ControlPlaneSpec::default();
    // a blank RUST_LOG counts as unset; the file/env level is info
    spec.extra_env.insert("RUST_LOG".into(), String::new());
    spec.extra_env
        .insert("MEMTRACE_LOG_LEVEL".into(), "info".into());
    let cp = ControlPlane::start(dir.path(), spec).await.unwrap();
    let ctl = Ctl {
        server: cp.url(),
        token: cp.admin_token().unwrap(),
        ca_file: None,
    };
    ctl.json(&["org", "list"]).await.unwrap();
    assert_eq!(debug_level_lines(&cp.logs()), 0, "{}", cp.logs());
    ctl.json(&["config", "set", "log.level", "debug"])
        .await
        .unwrap();
    ctl.json(&["org", "list"]).await.unwrap();
    let logs = cp.logs();
    assert!(logs.contains("log level changed"), "{logs}");
    assert!(debug_level_lines(&logs) > 0, "{logs}");
    ctl.json(&["config", "set", "log.level", "warn"])
        .await
        .unwrap();
    let before = debug_level_lines(&cp.logs());
    ctl.json(&["org", "list"]).await.unwrap();
    assert_eq!(debug_level_lines(&cp.logs()), before);

    // RUST_LOG pins it: the stored level (warn) is not applied
    drop(cp);
    let dir = tempfile::tempdir().unwrap();
    let mut spec = ControlPlaneSpec::default();
    spec.extra_env.insert("RUST_LOG".into(), "debug".into());
    let cp = ControlPlane::start(dir.path(), spec).await.unwrap();
    let ctl = Ctl {
        server: cp.url(),
        token: cp.admin_token().unwrap(),
        ca_file: None,
    };
    ctl.json(&["config", "set", "log.level", "error"])
        .await
        .unwrap();
    let before = debug_level_lines(&cp.logs());
    ctl.json(&["org", "list"]).await.unwrap();
    assert!(debug_level_lines(&cp.logs()) > before, "{}", cp.logs());
    assert!(!cp.logs().contains("log level changed"));
}
