//! Fault scenario 1, worker crash: three real workers under REST and gRPC
//! streaming load with client-chosen ids; one is killed with SIGKILL
//! mid-stream, started again, and then another is killed. Clients retry
//! every batch that was not acknowledged on the other workers with the
//! same ids. The checker reads everything back through every worker's API
//! and straight from the Arc stand-in: every acknowledged memory is there,
//! none is shown twice, every batch was acknowledged in the end, and the
//! kills did cut batches short (the retries happened).
//! `MEMTRACE_FAULTS_FULL=1` runs the long variant.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_tests::faults::{Load, LoadSpec, Rig, RigSpec, print_figures, report_json, scaled};
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_workers_lose_no_acknowledged_memory_and_show_none_twice() {
    let mut rig = Rig::start(RigSpec::new("/memtrace-faults-crash/v1/", 3))
        .await
        .unwrap();
    let phase = scaled(Duration::from_secs(2), Duration::from_secs(20));
    let spec = LoadSpec::new("crash", phase * 3);
    let load = Load::start(spec.clone(), rig.endpoints.clone(), &rig.key);
    load.wait_acked(200, Duration::from_secs(30)).await.unwrap();
    tokio::time::sleep(phase / 2).await;

    let mut recoveries = Vec::new();
    let mut restarts = Vec::new();
    for victim in [0, 1] {
        let killed_at = Instant::now();
        let status = rig.kill_worker(victim).await.unwrap();
        assert!(!status.success(), "SIGKILL ends the worker: {status}");
        // the others keep acknowledging
        load.wait_acked(100, Duration::from_secs(30)).await.unwrap();
        tokio::time::sleep(phase / 2).await;
        restarts.push(rig.start_worker(victim).await.unwrap());
        load.wait_acked(100, Duration::from_secs(30)).await.unwrap();
        let h = load.history.lock().unwrap();
        recoveries.push(h.retry_recovery(killed_at));
    }
    let peak_rss = rig.peak_rss_kib();
    let elapsed = load.started().elapsed();
    let history = load.finish().await.unwrap();
    let report = rig.check(&history, &spec).await.unwrap();
    eprintln!("worker crash: {report}");
    report.assert_clean("worker crash");
    assert!(report.acknowledged > 0);
    assert_eq!(
        report.unfinished_batches, 0,
        "every batch acknowledged: {report}"
    );
    assert_eq!(report.acknowledged, report.sent, "{report}");
    assert_eq!(report.permanent_refusals, 0, "{report}");
    assert!(
        report.retried_batches > 0,
        "the kills cut no batch short: {report}"
    );
    print_figures(
        "worker_crash",
        json!({
            "workers": 3,
            "kills": 2,
            "load_seconds": elapsed.as_secs_f64(),
            "events_per_second": report.acknowledged as f64 / elapsed.as_secs_f64(),
            "retried_batches_acknowledged_within_ms": recoveries
                .iter()
                .map(|r| r.map(|d| d.as_millis() as u64))
                .collect::<Vec<_>>(),
            "restart_ready_ms": restarts.iter().map(|d| d.as_millis() as u64).collect::<Vec<_>>(),
            "peak_rss_kib": peak_rss,
            "report": report_json(&report),
        }),
    );
}
