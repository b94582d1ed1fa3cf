//! Fault scenario 4, Arc failing: two real workers under REST and gRPC
//! streaming load with client-chosen ids, while the org's Arc (the
//! stand-in) answers 503 bursts, stores a batch and then answers 500,
//! answers slowly, closes connections unanswered, stalls past the
//! workers' Arc timeout, and refuses connections (nothing listening).
//! Nothing is acknowledged that Arc did not store, nothing is shown twice,
//! every refusal a client got was retryable and carried a Retry-After
//! (503 when Arc kept failing, 429 if the org's queue was full), the workers' memory stays bounded, and writes are
//! acknowledged again soon after Arc recovers. A second test restarts Arc
//! without its WAL: only what Arc itself lost can be missing.
//! `MEMTRACE_FAULTS_FULL=1` runs the long variant.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_tests::arc::{ArcStandIn, Buffering, CostModel, Fault, Target};
use memtrace_tests::faults::{
    Load, LoadSpec, Report, Rig, RigSpec, print_figures, report_json, scaled,
};
use memtrace_tests::load::peak_rss_kib;
use serde_json::json;
use std::time::{Duration, Instant};

/// Worker memory bound asserted under every Arc fault (peak RSS).
const RSS_BOUND_KIB: u64 = 256 * 1024;

fn refusals(report: &Report) -> Vec<(&String, &u64)> {
    report
        .outcomes
        .iter()
        .filter(|(k, _)| k.starts_with("rest ") || k.starts_with("grpc "))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_arc_never_gets_a_write_acknowledged_that_it_did_not_store() {
    // the workers give Arc 1 s per request, so a stall outlasts it
    let spec = RigSpec::new("/memtrace-faults-arc/v1/", 2)
        .worker_env("MEMTRACE_ARC_QUERY_TIMEOUT", "1")
        .setting("limits.max_queued_events", "50");
    let rig = Rig::start(spec).await.unwrap();
    let phase = scaled(Duration::from_millis(1500), Duration::from_secs(15));
    let spec = LoadSpec::new("arcfaults", phase * 12);
    let load = Load::start(spec.clone(), rig.endpoints.clone(), &rig.key);
    load.wait_acked(200, Duration::from_secs(30)).await.unwrap();
    let base_from = Instant::now();
    tokio::time::sleep(phase).await;
    let base_to = Instant::now();

    let faults = rig.arc.faults();
    let mut timeline = Vec::new();
    let mut inject = async |name: &str, fault: Option<Fault>| {
        let at = Instant::now();
        match fault {
            Some(f) => faults.inject(f),
            None => rig.arc.go_down(),
        }
        tokio::time::sleep(phase).await;
        faults.clear();
        rig.arc.come_back().await.unwrap();
        let cleared = Instant::now();
        load.wait_acked(50, Duration::from_secs(30)).await.unwrap();
        let h = load.history.lock().unwrap();
        timeline.push(json!({
            "fault": name,
            "acked_during": h.acked_between(at, cleared),
            "first_ack_after_clear_ms": h.first_ack_after(cleared).map(|d| d.as_millis() as u64),
            "retried_batches_acknowledged_within_ms":
                h.retry_recovery(at).map(|d| d.as_millis() as u64),
        }));
    };
    inject("503 burst", Some(Fault::status(503).on(Target::Writes))).await;
    inject(
        "stored then 500",
        Some(
            Fault::status_after_processing(500)
                .on(Target::Writes)
                .times(30),
        ),
    )
    .await;
    inject(
        "slow 300 ms",
        Some(Fault::slow(Duration::from_millis(300)).on(Target::Writes)),
    )
    .await;
    inject(
        "connection closed unanswered",
        Some(Fault::drop_connection().on(Target::Writes).times(30)),
    )
    .await;
    inject(
        "stall past the timeout",
        Some(Fault::stall().on(Target::Writes)),
    )
    .await;
    inject("connections refused", None).await;

    let after_from = Instant::now();
    tokio::time::sleep(phase).await;
    let after_to = Instant::now();
    let (base, after) = {
        let h = load.history.lock().unwrap();
        (
            h.acked_between(base_from, base_to),
            h.acked_between(after_from, after_to),
        )
    };
    let peak_rss: Vec<u64> = rig
        .workers
        .iter()
        .flatten()
        .filter_map(|w| w.pid().and_then(peak_rss_kib))
        .collect();
    let elapsed = load.started().elapsed();
    let history = load.finish().await.unwrap();
    let report = rig.check(&history, &spec).await.unwrap();
    eprintln!("arc faults: {report}");
    report.assert_clean("arc faults");
    assert_eq!(
        report.lost_in_store, 0,
        "acknowledged, not in Arc: {report}"
    );
    assert_eq!(
        report.unfinished_batches, 0,
        "every batch acknowledged: {report}"
    );
    assert_eq!(report.acknowledged, report.sent, "{report}");
    assert_eq!(report.permanent_refusals, 0, "{report}");
    assert!(
        !refusals(&report).is_empty(),
        "the faults reached no client: {report}"
    );
    for (code, n) in refusals(&report) {
        assert!(
            code.contains("retry-after"),
            "{n} × {code}: a refusal without Retry-After"
        );
    }
    assert!(
        report.extra_stored_copies > 0,
        "batches stored and then answered 500 were retried: {report}"
    );
    for kib in &peak_rss {
        assert!(*kib < RSS_BOUND_KIB, "worker peak RSS {kib} KiB");
    }
    assert!(after > 0, "writes acknowledged after Arc recovered");
    print_figures(
        "arc_failures",
        json!({
            "workers": 2,
            "load_seconds": elapsed.as_secs_f64(),
            "phase_ms": phase.as_millis() as u64,
            "acked_per_s_before": base as f64 / (base_to - base_from).as_secs_f64(),
            "acked_per_s_after": after as f64 / (after_to - after_from).as_secs_f64(),
            "timeline": timeline,
            "peak_rss_kib": peak_rss,
            "report": report_json(&report),
        }),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_arc_restart_without_wal_loses_only_what_arc_itself_lost() {
    let buffering = Buffering {
        max_age: Duration::from_millis(400),
        max_rows: 50_000,
    };
    let arc = ArcStandIn::builder()
        .cost_model(CostModel::instant())
        .buffering(buffering)
        .visibility_delay(true);
    let spec = RigSpec::new("/memtrace-faults-arc-restart/v1/", 2).arc(arc);
    let rig = Rig::start(spec).await.unwrap();
    let phase = scaled(Duration::from_secs(1), Duration::from_secs(10));
    let spec = LoadSpec::new("arcrestart", phase * 5);
    let load = Load::start(spec.clone(), rig.endpoints.clone(), &rig.key);
    load.wait_acked(200, Duration::from_secs(30)).await.unwrap();
    let mut lost_by_arc = 0;
    let mut down = Vec::new();
    for _ in 0..2 {
        tokio::time::sleep(phase).await;
        let at = Instant::now();
        lost_by_arc += rig.arc.restart(Duration::from_millis(300)).await.unwrap();
        load.wait_acked(50, Duration::from_secs(30)).await.unwrap();
        down.push(
            load.history
                .lock()
                .unwrap()
                .first_ack_after(at + Duration::from_millis(300)),
        );
    }
    let elapsed = load.started().elapsed();
    let history = load.finish().await.unwrap();
    rig.arc.flush_buffers().unwrap();
    let report = rig.check(&history, &spec).await.unwrap();
    eprintln!("arc restart: {report}; Arc lost {lost_by_arc} buffered rows");
    assert!(
        lost_by_arc > 0,
        "the restarts found nothing buffered to lose"
    );
    assert!(report.visible_duplicates.is_empty(), "{report}");
    assert!(report.unknown_ids.is_empty(), "{report}");
    assert_eq!(report.unfinished_batches, 0, "{report}");
    assert_eq!(
        report.lost_in_store,
        report.acknowledged_lost.len(),
        "whatever is missing is missing from Arc itself: {report}"
    );
    assert!(
        report.acknowledged_lost.len() as u64 <= lost_by_arc,
        "more acknowledged memories missing than Arc lost: {report}"
    );
    print_figures(
        "arc_restart_without_wal",
        json!({
            "workers": 2,
            "load_seconds": elapsed.as_secs_f64(),
            "restarts": 2,
            "rows_lost_by_arc": lost_by_arc,
            "acked_again_after_restart_ms": down
                .iter()
                .map(|d| d.map(|d| d.as_millis() as u64))
                .collect::<Vec<_>>(),
            "report": report_json(&report),
        }),
    );
}
