//! The real `memtrace-worker` binary against a real etcd and control plane:
//! startup refusals, readiness after the first snapshot, probes and metrics,
//! registration seen by `memtracectl workers`/`status`, a hot setting applied
//! without restart, and a clean SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_common::keys::generate_key_b64;
use memtrace_tests::cluster::{self, Cluster, Probe};
use memtrace_tests::process::{isolated_command, output_within};
use std::time::Duration;

const PREFIX: &str = "/memtrace-workers/v1/";

async fn refused(env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut command = isolated_command("memtrace-worker", dir.path()).unwrap();
    command
        .env("MEMTRACE_SERVER_HOST", "127.0.0.1")
        .env("MEMTRACE_SERVER_PORT", "0");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = output_within(command, Duration::from_secs(20))
        .await
        .unwrap();
    assert!(
        !out.status.success(),
        "worker must refuse to start: {out:?}"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn refuses_to_start_without_what_it_needs() {
    let fleet = generate_key_b64();
    let err = refused(&[("MEMTRACE_FLEET_KEY", &fleet)]).await;
    assert!(err.contains("MEMTRACE_ETCD_ENDPOINTS"), "{err}");
    let err = refused(&[("MEMTRACE_ETCD_ENDPOINTS", "http://127.0.0.1:9")]).await;
    assert!(err.contains("MEMTRACE_FLEET_KEY is required"), "{err}");
    let err = refused(&[
        ("MEMTRACE_ETCD_ENDPOINTS", "http://127.0.0.1:9"),
        ("MEMTRACE_FLEET_KEY", &fleet),
        ("MEMTRACE_MASTER_KEY", &generate_key_b64()),
    ])
    .await;
    assert!(
        err.contains("master key never leaves the control plane"),
        "{err}"
    );
    let err = refused(&[
        ("MEMTRACE_ETCD_ENDPOINTS", "http://127.0.0.1:9"),
        ("MEMTRACE_FLEET_KEY", "short"),
    ])
    .await;
    assert!(err.contains("MEMTRACE_FLEET_KEY"), "{err}");
}

async fn eventually<P: Probe>(what: &str, probe: impl AsyncFnMut() -> P) -> P::Value {
    cluster::eventually(what, Duration::from_secs(15), probe)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_register_serve_probes_and_apply_settings_hot() {
    let c = Cluster::start(PREFIX).await.unwrap();
    let ctl = &c.ctl;
    c.org("workers").await.unwrap();

    let ttl = [("MEMTRACE_WORKER_REGISTRATION_TTL_MS", "2000")];
    let a = c.worker("worker-a", &ttl).await.unwrap();
    let b = c.worker("worker-b", &ttl).await.unwrap();
    let http = memtrace_tests::http_client();
    for w in [&a, &b] {
        let ready: serde_json::Value = eventually("ready", async || {
            let r = http.get(format!("{}/ready", w.url())).send().await.ok()?;
            (r.status() == 200).then_some(())?;
            r.json().await.ok()
        })
        .await;
        assert_eq!(ready["orgs"], 1, "{ready}");
        let health: serde_json::Value = http
            .get(format!("{}/health", w.url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(health["service"], "memtrace");
    }

    // both registered and in sync; a hot setting reaches them without restart
    eventually("both workers in sync", async || {
        let status = ctl.json(&["status"]).await.ok()?;
        (status["workers_in_sync"] == 2).then_some(())
    })
    .await;
    let revision = c.set_config("arc.write_batch_size", "700").await.unwrap();
    eventually("setting applied by both", async || {
        let status = ctl.json(&["status"]).await.ok()?;
        let all = status["workers"]
            .as_array()?
            .iter()
            .all(|w| w["applied_revision"].as_i64() >= Some(revision));
        (all && status["workers_in_sync"] == 2).then_some(())
    })
    .await;
    let metrics = http
        .get(format!("{}/metrics", a.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let reloads = |metrics: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("memtrace_config_reloads_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    assert!(
        reloads(&metrics) >= Some(1),
        "the setting was applied as a published change: {metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("memtrace_snapshot_applied_revision ")
                && l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<i64>().ok())
                    >= Some(revision)),
        "{metrics}"
    );

    // SIGTERM: clean exit; the registration lapses with its lease
    assert!(b.stop().await.unwrap().success());
    eventually("worker-b gone from the registry", async || {
        let workers = ctl.json(&["workers"]).await.ok()?;
        let ids: Vec<String> = workers["workers"]
            .as_array()?
            .iter()
            .filter_map(|w| w["worker_id"].as_str().map(str::to_owned))
            .collect();
        (ids == vec!["worker-a".to_owned()]).then_some(())
    })
    .await;
    assert!(
        !a.logs().contains(&c.fleet_key),
        "the fleet key is never logged"
    );
}
