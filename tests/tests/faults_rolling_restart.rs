//! Fault scenario 5, deploy churn: three real workers under REST and gRPC
//! streaming load with client-chosen ids, restarted one by one with SIGTERM
//! (each exits cleanly, a new one takes its place before the next goes).
//! What a stopping worker held is flushed and acknowledged, or refused
//! with a retryable error and retried elsewhere with the same ids: the
//! checker finds every acknowledged memory, none twice, every batch
//! acknowledged in the end, and no client saw an error it may not retry.
//! `MEMTRACE_FAULTS_FULL=1` runs the long variant.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_tests::faults::{Load, LoadSpec, Rig, RigSpec, print_figures, report_json, scaled};
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_loses_nothing_and_errs_only_retryably() {
    let mut rig = Rig::start(RigSpec::new("/memtrace-faults-rolling/v1/", 3))
        .await
        .unwrap();
    let phase = scaled(Duration::from_secs(1), Duration::from_secs(10));
    let spec = LoadSpec::new("rolling", phase * 8);
    let load = Load::start(spec.clone(), rig.endpoints.clone(), &rig.key);
    load.wait_acked(200, Duration::from_secs(30)).await.unwrap();

    let mut stops = Vec::new();
    let mut starts = Vec::new();
    let mut recoveries = Vec::new();
    let rounds = if memtrace_tests::faults::full() { 2 } else { 1 };
    for _ in 0..rounds {
        for i in 0..3 {
            tokio::time::sleep(phase).await;
            let at = Instant::now();
            let (status, log) = rig.stop_worker(i).await.unwrap();
            assert!(
                status.success(),
                "worker {i} exits cleanly: {status}\n{log}"
            );
            stops.push(at.elapsed());
            starts.push(rig.start_worker(i).await.unwrap());
            load.wait_acked(100, Duration::from_secs(30)).await.unwrap();
            recoveries.push(load.history.lock().unwrap().retry_recovery(at));
        }
    }
    let elapsed = load.started().elapsed();
    let history = load.finish().await.unwrap();
    let report = rig.check(&history, &spec).await.unwrap();
    eprintln!("rolling restart: {report}");
    report.assert_clean("rolling restart");
    assert!(report.acknowledged > 0);
    assert_eq!(
        report.unfinished_batches, 0,
        "every batch acknowledged: {report}"
    );
    assert_eq!(report.acknowledged, report.sent, "{report}");
    assert_eq!(
        report.permanent_refusals, 0,
        "clients saw only retryable errors: {report}"
    );
    let ms = |v: &[Duration]| v.iter().map(|d| d.as_millis() as u64).collect::<Vec<_>>();
    print_figures(
        "rolling_restart",
        json!({
            "workers": 3,
            "restarts": stops.len(),
            "load_seconds": elapsed.as_secs_f64(),
            "events_per_second": report.acknowledged as f64 / elapsed.as_secs_f64(),
            "sigterm_to_exit_ms": ms(&stops),
            "replacement_ready_ms": ms(&starts),
            "retried_batches_acknowledged_within_ms": recoveries
                .iter()
                .map(|r| r.map(|d| d.as_millis() as u64))
                .collect::<Vec<_>>(),
            "report": report_json(&report),
        }),
    );
}
