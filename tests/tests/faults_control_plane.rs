//! Fault scenario 3, control plane down: two real workers under REST and
//! gRPC streaming load with client-chosen ids while the control plane is
//! killed (SIGKILL) and later hung (SIGSTOP). The data plane does not
//! notice: every write attempt made meanwhile is acknowledged and every
//! read answers 200; admin calls fail (memtracectl says it cannot reach
//! the killed control plane; a hung one does not answer). Started again
//! on its database, the control plane publishes nothing (the state on etcd
//! is already the database's), and the checker finds every acknowledged
//! memory once.
//! `MEMTRACE_FAULTS_FULL=1` runs the long variant.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_tests::api::Api;
use memtrace_tests::faults::{Load, LoadSpec, Rig, RigSpec, print_figures, report_json, scaled};
use serde_json::json;
use std::time::{Duration, Instant};

/// Reads through every worker, `rounds` times over `span`: how many
/// answered 200, out of how many.
async fn reads(rig: &Rig, agent: &str, rounds: u32, span: Duration) -> (u32, u32) {
    let mut ok = (0, 0);
    for _ in 0..rounds {
        for w in rig.workers.iter().flatten() {
            let api = Api::new(w, Some(&rig.key));
            let (status, _) = api
                .get(&format!("/api/v1/memories?agent_id={agent}&limit=20"))
                .await;
            ok.1 += 1;
            if status == 200 {
                ok.0 += 1;
            }
        }
        tokio::time::sleep(span / rounds).await;
    }
    ok
}

async fn published_revision(rig: &Rig) -> i64 {
    let status = rig.cluster.ctl.json(&["status"]).await.unwrap();
    status["published_revision"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_plane_keeps_serving_while_the_control_plane_is_down_or_hung() {
    let mut rig = Rig::start(RigSpec::new("/memtrace-faults-cp/v1/", 2))
        .await
        .unwrap();
    let phase = scaled(Duration::from_secs(2), Duration::from_secs(30));
    // long enough for every phase; `finish` ends it
    let spec = LoadSpec::new("cpdown", phase * 30);
    let load = Load::start(spec.clone(), rig.endpoints.clone(), &rig.key);
    load.wait_acked(200, Duration::from_secs(30)).await.unwrap();
    let agent = spec.agent(0);
    let published = published_revision(&rig).await;

    // killed
    let killed_at = Instant::now();
    rig.cluster.control_plane.kill().await.unwrap();
    let read_ok_down = reads(&rig, &agent, 10, phase).await;
    let admin = rig.cluster.ctl.run(&["org", "list"]).await.unwrap();
    assert!(!admin.success, "an admin call with the control plane down");
    assert!(
        admin.stderr.contains("cannot reach the control plane"),
        "a clear error: {}",
        admin.stderr
    );
    let restarted_at = Instant::now();
    let cp_ready = rig.cluster.restart_control_plane().await.unwrap();

    // hung
    let frozen_at = Instant::now();
    rig.cluster.control_plane.freeze().unwrap();
    let read_ok_hung = reads(&rig, &agent, 10, phase).await;
    let hung_admin = tokio::time::timeout(
        Duration::from_secs(3),
        rig.cluster.ctl.run(&["org", "list"]),
    )
    .await;
    let hung_admin_failed = match hung_admin {
        Err(_) => true,
        Ok(out) => !out.unwrap().success,
    };
    let thawed_at = Instant::now();
    rig.cluster.control_plane.thaw().unwrap();
    assert!(hung_admin_failed, "an admin call to a hung control plane");

    load.wait_acked(100, Duration::from_secs(30)).await.unwrap();
    let elapsed = load.started().elapsed();
    let history = load.finish().await.unwrap();
    // every attempt has its answer now
    let (writes_down, writes_hung) = {
        let h = history.lock().unwrap();
        (
            h.attempts_between(killed_at, restarted_at),
            h.attempts_between(frozen_at, thawed_at),
        )
    };
    // nothing changed in the database: nothing is published again
    let republished = published_revision(&rig).await;

    let report = rig.check(&history, &spec).await.unwrap();
    eprintln!("control plane down: {report}");
    report.assert_clean("control plane down");
    assert_eq!(report.unfinished_batches, 0, "{report}");
    assert_eq!(report.acknowledged, report.sent, "{report}");
    assert_eq!(
        read_ok_down.0, read_ok_down.1,
        "reads with the control plane killed"
    );
    assert_eq!(
        read_ok_hung.0, read_ok_hung.1,
        "reads with the control plane hung"
    );
    assert!(writes_down.0 > 0 && writes_hung.0 > 0, "writes went on");
    assert_eq!(
        writes_down.1, 0,
        "a write failed with the control plane killed"
    );
    assert_eq!(
        writes_hung.1, 0,
        "a write failed with the control plane hung"
    );
    assert_eq!(
        republished, published,
        "the restarted control plane published again"
    );
    print_figures(
        "control_plane_down",
        json!({
            "workers": 2,
            "load_seconds": elapsed.as_secs_f64(),
            "down_ms": (restarted_at - killed_at).as_millis() as u64,
            "hung_ms": (thawed_at - frozen_at).as_millis() as u64,
            "write_attempts_down": [writes_down.0, writes_down.1],
            "write_attempts_hung": [writes_hung.0, writes_hung.1],
            "reads_ok_down": [read_ok_down.0, read_ok_down.1],
            "reads_ok_hung": [read_ok_hung.0, read_ok_hung.1],
            "control_plane_ready_after_restart_ms": cp_ready.as_millis() as u64,
            "published_revision_before_after": [published, republished],
            "report": report_json(&report),
        }),
    );
}
