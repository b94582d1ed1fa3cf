//! Fault scenario 4, Arc failing: two real workers under REST and gRPC
//! streaming load with client-chosen ids, while the org's Arc (the
//! stand-in) answers 503 bursts, stores a batch and then answers 500,
//! answers slowly, closes connections unanswered (FIN) and resets them
//! (RST) — before storing the batch, and after — stalls past the workers' Arc timeout, and refuses connections
//! (nothing listening).
//! Nothing is acknowledged that Arc did not store, nothing is shown twice,
//! every refusal a client got was retryable and carried a Retry-After
//! (503 when Arc kept failing, 429 if the org's queue was full), the
//! workers' memory stays bounded, and after Arc recovers the acknowledged
//! rate is back to ≥ 90 % of the rate before the faults (over 1 s) within
//! a bound. A second test restarts Arc
//! without its WAL: only what Arc itself lost can be missing. A third
//! stalls one org's Arc while another org writes through the same worker:
//! the other org's writes all succeed at the rate they had before.
//! `MEMTRACE_FAULTS_FULL=1` runs the long variant.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_tests::arc::{ArcStandIn, Buffering, CostModel, Fault, Target, TokenGrant};
use memtrace_tests::faults::{
    Endpoints, Load, LoadSpec, Report, Rig, RigSpec, Transport, print_figures, readback,
    report_json, scaled,
};
use serde_json::json;
use std::time::{Duration, Instant};

/// Worker memory bound asserted under every Arc fault (peak RSS).
const RSS_BOUND_KIB: u64 = 256 * 1024;

/// After Arc recovered, the acknowledged rate over [`RATE_WINDOW`] must be
/// back to this share of the rate before the faults…
const RECOVERED_SHARE: f64 = 0.9;
/// …measured over this long…
const RATE_WINDOW: Duration = Duration::from_secs(1);
/// …in a window that ends at most this long after the last fault was
/// cleared (long variant: [`RECOVERY_BOUND_LONG`]).
const RECOVERY_BOUND: Duration = Duration::from_secs(5);
const RECOVERY_BOUND_LONG: Duration = Duration::from_secs(15);

/// When, after `cleared`, a [`RATE_WINDOW`] first acknowledged at least
/// `share` of `base_per_s` (its end, from `cleared`), checking windows
/// that start every 100 ms until one ends past `bound`; and the best share
/// seen.
async fn rate_recovery(
    load: &Load,
    cleared: Instant,
    base_per_s: f64,
    share: f64,
    bound: Duration,
) -> (Option<Duration>, f64) {
    let step = Duration::from_millis(100);
    let mut best = 0.0_f64;
    let steps = (bound.saturating_sub(RATE_WINDOW).as_millis() / step.as_millis()) as u32;
    for k in 0..=steps {
        let from = cleared + step * k;
        let to = from + RATE_WINDOW;
        tokio::time::sleep_until(to.into()).await;
        let acked = load.history.lock().unwrap().acked_between(from, to);
        let got = acked as f64 / RATE_WINDOW.as_secs_f64() / base_per_s;
        best = best.max(got);
        if got >= share {
            return (Some(to - cleared), best);
        }
    }
    (None, best)
}

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
    let phase = scaled(Duration::from_millis(1500), Duration::from_secs(8));
    let spec = LoadSpec::new("arcfaults", phase * 22);
    let load = Load::start(spec.clone(), rig.endpoints.clone(), &rig.key);
    load.wait_acked(200, Duration::from_secs(30)).await.unwrap();
    let base_from = Instant::now();
    tokio::time::sleep(phase).await;
    let base_to = Instant::now();
    let base = load
        .history
        .lock()
        .unwrap()
        .acked_between(base_from, base_to);

    let faults = rig.arc.faults();
    let mut timeline = Vec::new();
    let mut inject = async |name: &str, fault: Option<Fault>| {
        let at = Instant::now();
        let applied = faults.applied();
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
            "requests_hit": faults.applied() - applied,
            "acked_during": h.acked_between(at, cleared),
            "first_ack_after_clear_ms": h.first_ack_after(cleared).map(|d| d.as_millis() as u64),
            "retried_batches_acknowledged_within_ms":
                h.retry_recovery(at).map(|d| d.as_millis() as u64),
        }));
        cleared
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
        "connection reset (RST)",
        Some(Fault::reset_connection().on(Target::Writes).times(30)),
    )
    .await;
    inject(
        "stored then reset (RST)",
        Some(Fault::reset_after_processing().on(Target::Writes).times(30)),
    )
    .await;
    inject(
        "stall past the timeout",
        Some(Fault::stall().on(Target::Writes)),
    )
    .await;
    let cleared = inject("connections refused", None).await;
    let base_per_s = base as f64 / (base_to - base_from).as_secs_f64();
    let bound = if memtrace_tests::faults::full() {
        RECOVERY_BOUND_LONG
    } else {
        RECOVERY_BOUND
    };
    let (recovered_within, best_share) =
        rate_recovery(&load, cleared, base_per_s, RECOVERED_SHARE, bound).await;

    let after_from = Instant::now();
    tokio::time::sleep(phase).await;
    let after_to = Instant::now();
    let after = load
        .history
        .lock()
        .unwrap()
        .acked_between(after_from, after_to);
    let peak_rss = rig.peak_rss_kib();
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
    let hit = |name: &str| {
        timeline
            .iter()
            .find(|t| t["fault"] == name)
            .and_then(|t| t["requests_hit"].as_u64())
    };
    for fault in ["connection reset (RST)", "stored then reset (RST)"] {
        assert!(
            hit(fault) > Some(0),
            "{fault} reached no write: {timeline:?}"
        );
    }
    assert!(
        recovered_within.is_some(),
        "acknowledged rate not back to {RECOVERED_SHARE} of {base_per_s:.0}/s within \
         {bound:?} of Arc's recovery (best {best_share:.2})"
    );
    print_figures(
        "arc_failures",
        json!({
            "workers": 2,
            "load_seconds": elapsed.as_secs_f64(),
            "phase_ms": phase.as_millis() as u64,
            "acked_per_s_before": base as f64 / (base_to - base_from).as_secs_f64(),
            "acked_per_s_after": after as f64 / (after_to - after_from).as_secs_f64(),
            "rate_back_to_90_percent_within_ms":
                recovered_within.map(|d| d.as_millis() as u64),
            "best_share_of_base_rate_in_1s": best_share,
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

/// The `p`-th percentile of `samples` in ms (nearest rank; 0 when empty).
fn percentile_ms(samples: &mut [Duration], p: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_unstable();
    let rank = ((p / 100.0) * (samples.len() - 1) as f64).round() as usize;
    samples[rank].as_secs_f64() * 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_orgs_stalled_arc_does_not_slow_another_org_on_the_same_worker() {
    let spec = RigSpec::new("/memtrace-faults-arc-orgs/v1/", 1)
        .worker_env("MEMTRACE_ARC_QUERY_TIMEOUT", "1");
    let rig = Rig::start(spec).await.unwrap();
    // a second org on its own Arc, served by the same worker
    let other_arc = ArcStandIn::builder()
        .cost_model(CostModel::instant())
        .token(
            "arc-other-token-0123456789",
            TokenGrant::databases(["other"]),
        )
        .start()
        .await
        .unwrap();
    let other = rig.cluster.org("other").await.unwrap();
    rig.cluster
        .add_arc(
            &other,
            &other_arc.url(),
            "other",
            Some("arc-other-token-0123456789"),
        )
        .await
        .unwrap();
    let (other_key, _) = rig.cluster.key(&other, "read,write").await.unwrap();
    rig.cluster.wait_in_sync(rig.worker(0)).await.unwrap();

    let phase = scaled(Duration::from_secs(2), Duration::from_secs(10));
    let spec_a = LoadSpec::new("stalledorg", phase * 30);
    let spec_b = LoadSpec::new("healthyorg", phase * 30);
    let load_a = Load::start(spec_a.clone(), rig.endpoints.clone(), &rig.key);
    let endpoints_b = Endpoints::new(rig.urls()).unwrap();
    let load_b = Load::start(spec_b.clone(), endpoints_b, &other_key);
    load_b
        .wait_acked(200, Duration::from_secs(30))
        .await
        .unwrap();
    load_a
        .wait_acked(200, Duration::from_secs(30))
        .await
        .unwrap();

    let before = Instant::now();
    tokio::time::sleep(phase).await;
    let stalled = Instant::now();
    rig.arc.faults().inject(Fault::stall().on(Target::Writes));
    tokio::time::sleep(phase).await;
    let cleared = Instant::now();
    rig.arc.faults().clear();
    load_a
        .wait_acked(100, Duration::from_secs(30))
        .await
        .unwrap();

    let history_b = load_b.finish().await.unwrap();
    let history_a = load_a.finish().await.unwrap();
    let (rate, p50, p99, attempts_during, a_rate) = {
        let hb = history_b.lock().unwrap();
        let ha = history_a.lock().unwrap();
        let secs = |from: Instant, to: Instant| (to - from).as_secs_f64();
        let rate = [
            hb.acked_between(before, stalled) as f64 / secs(before, stalled),
            hb.acked_between(stalled, cleared) as f64 / secs(stalled, cleared),
        ];
        let mut p50 = Vec::new();
        let mut p99 = Vec::new();
        for (from, to) in [(before, stalled), (stalled, cleared)] {
            let mut l = hb.answered_latencies(Transport::Rest, from, to);
            l.extend(hb.answered_latencies(Transport::Grpc, from, to));
            p50.push(percentile_ms(&mut l, 50.0));
            p99.push(percentile_ms(&mut l, 99.0));
        }
        (
            rate,
            p50,
            p99,
            hb.attempts_between(stalled, cleared),
            [
                ha.acked_between(before, stalled) as f64 / secs(before, stalled),
                ha.acked_between(stalled, cleared) as f64 / secs(stalled, cleared),
            ],
        )
    };
    let report_a = rig.check(&history_a, &spec_a).await.unwrap();
    let observed_b = readback::observe(
        &rig.urls(),
        &other_key,
        &spec_b.agents(),
        &other_arc,
        "other",
        &other,
    )
    .await
    .unwrap();
    let report_b = history_b.lock().unwrap().check(&observed_b);
    eprintln!("stalled org: {report_a}\nhealthy org: {report_b}");
    report_a.assert_clean("stalled org");
    report_b.assert_clean("healthy org");
    assert!(
        a_rate[1] < 0.5 * a_rate[0],
        "the stall slowed the stalled org: {a_rate:?} acknowledged/s before and during"
    );
    assert_eq!(attempts_during.1, 0, "a write of the healthy org failed");
    assert!(
        rate[1] >= 0.8 * rate[0],
        "the healthy org's acknowledged/s fell from {} to {} while the other org's Arc stalled",
        rate[0],
        rate[1]
    );
    print_figures(
        "arc_stalled_org_isolation",
        json!({
            "workers": 1,
            "phase_ms": phase.as_millis() as u64,
            "healthy_acked_per_s_before_during": rate,
            "healthy_answer_p50_ms_before_during": p50,
            "healthy_answer_p99_ms_before_during": p99,
            "healthy_attempts_during": [attempts_during.0, attempts_during.1],
            "stalled_acked_per_s_before_during": a_rate,
            "stalled_report": report_json(&report_a),
            "healthy_report": report_json(&report_b),
        }),
    );
}
