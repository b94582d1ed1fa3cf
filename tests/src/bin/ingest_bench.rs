//! Ingest benchmark of the worker (issue 4's figures). Real etcd, the real
//! control-plane and worker binaries (release), an in-process Arc stand-in
//! that decodes and counts every write. Phases, all bounded in time and
//! count and aimed at 127.0.0.1 only:
//!
//! 1. direct: the load generator posts pre-encoded batches straight to the
//!    stand-in: the ceiling of this machine and stand-in;
//! 2. grpc: `StreamMemories` into the worker, which batches into the
//!    stand-in; reported as events/s and as a ratio of the direct rate;
//! 3. rest: single-memory POSTs shaped like the SDK's `remember` at
//!    concurrency 64: req/s, p50/p99;
//! 4. rss: the worker's resident set idle, and while Arc stalls every write
//!    (gRPC streams fill the org's bounded queue and get RESOURCE_EXHAUSTED),
//!    then after the stall is released.
//!
//! Run with `scripts/bench.sh ingest` (release build).

use anyhow::{Context, bail};
use memtrace_tests::arc::{ArcStandIn, Fault, Target};
use memtrace_tests::cluster::{Cluster, eventually};
use memtrace_tests::load::{self, Bounds, Run, cpu_time, rss_kib};
use std::time::{Duration, Instant};

const USAGE: &str = "usage: ingest-bench [--seconds N (10)] [--rows N per batch (1000)] \
[--streams N (4)] [--window N unacknowledged batches per stream (8)] \
[--concurrency N REST clients (64)] [--dedup on|off (on)]";

struct Args {
    seconds: u64,
    rows: usize,
    streams: usize,
    window: usize,
    concurrency: usize,
    dedup: bool,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        seconds: 10,
        rows: 1000,
        streams: 4,
        window: 8,
        concurrency: 64,
        dedup: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = it
            .next()
            .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        if flag == "--dedup" {
            a.dedup = match value.as_str() {
                "on" => true,
                "off" => false,
                other => bail!("--dedup takes on or off, got {other}"),
            };
            continue;
        }
        let n: u64 = value
            .parse()
            .with_context(|| format!("{flag} takes a number"))?;
        match flag.as_str() {
            "--seconds" => a.seconds = n,
            "--rows" => a.rows = n as usize,
            "--streams" => a.streams = n as usize,
            "--window" => a.window = n as usize,
            "--concurrency" => a.concurrency = n as usize,
            other => bail!("unknown flag {other}\n{USAGE}"),
        }
    }
    anyhow::ensure!((1..=120).contains(&a.seconds), "--seconds must be 1..=120");
    anyhow::ensure!((1..=10_000).contains(&a.rows), "--rows must be 1..=10000");
    anyhow::ensure!((1..=64).contains(&a.streams), "--streams must be 1..=64");
    anyhow::ensure!((1..=64).contains(&a.window), "--window must be 1..=64");
    anyhow::ensure!(
        (1..=1024).contains(&a.concurrency),
        "--concurrency must be 1..=1024"
    );
    Ok(a)
}

fn line(name: &str, run: &mut Run) {
    println!(
        "{name:<8} events/s={:>12.0}  req/s={:>9.0}  p50={:>7.2} ms  p99={:>7.2} ms  ok={} errors={} (429: {})  {:.1}s",
        run.events_per_sec(),
        run.requests_per_sec(),
        run.percentile_ms(50.0),
        run.percentile_ms(99.0),
        run.requests,
        run.errors,
        run.throttled,
        run.elapsed.as_secs_f64(),
    );
    if !run.failures.is_empty() {
        println!(
            "{name:<8} failures by status (0 = no response): {:?}",
            run.failures
        );
    }
}

/// The worker's CPU per acknowledged event and its average cores over the
/// phase: steadier than a rate on a shared machine, and what the worker
/// itself costs (the generator and the stand-in run in this process).
fn worker_cpu(name: &str, run: &Run, before: Option<Duration>, after: Option<Duration>) {
    if let (Some(b), Some(a)) = (before, after) {
        let used = a.saturating_sub(b).as_secs_f64();
        println!(
            "{name:<8} worker cpu: {:.2} µs/event, {:.2} cores",
            used * 1e6 / (run.events.max(1) as f64),
            used / run.elapsed.as_secs_f64().max(1e-9),
        );
    }
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let phase = Duration::from_secs(args.seconds);
    let bounded = |max_requests| Bounds {
        duration: phase,
        max_requests,
    };
    let arc = ArcStandIn::builder().counting_only(true).start().await?;
    let database = "bench";

    // 1. direct ceiling
    let mut direct = load::direct_arc(
        &arc.url(),
        database,
        "events",
        args.rows,
        args.streams,
        bounded(1_000_000),
    )
    .await?;
    line("direct", &mut direct);

    // the system under test
    let cluster = Cluster::start("/memtrace-ingest-bench/v1/").await?;
    let org_id = cluster.org("bench").await?;
    cluster.add_arc(&org_id, &arc.url(), database, None).await?;
    let (key, _) = cluster.key(&org_id, "read,write").await?;
    for (setting, value) in [
        ("arc.write_batch_size", "5000"),
        ("limits.requests_per_second", "0"),
        ("dedup.enabled", if args.dedup { "true" } else { "false" }),
        ("arc.write_linger_ms", "5"),
        ("limits.max_queued_events", "200000"),
    ] {
        cluster.set_config(setting, value).await?;
    }
    // quiet, except the startup line the harness reads the address from
    // and the allocator setting deploy/kubernetes/worker.yaml ships with
    let quiet = [
        (
            "MEMTRACE_LOG_LEVEL",
            "warn,memtrace_data_plane::worker=info",
        ),
        ("MIMALLOC_ARENA_EAGER_COMMIT", "0"),
    ];
    let worker = cluster.worker("bench-worker", &quiet).await?;
    let pid = worker.pid().context("worker pid")?;
    let url = worker.url();
    wait_writable(&url, &key).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss_kib(pid);

    // 2. gRPC streaming
    let stored_rows = || arc.stats().db(database).rows;
    let before = stored_rows();
    let cpu_before = cpu_time(pid);
    let grpc = load::grpc_stream(
        "grpc",
        &url,
        &key,
        args.rows,
        args.streams,
        args.window,
        bounded(1_000_000),
    );
    let mut grpc = within_bound("grpc", phase, grpc).await?;
    line("grpc", &mut grpc);
    worker_cpu("grpc", &grpc, cpu_before, cpu_time(pid));
    acknowledged_were_stored("grpc", &grpc, stored_rows() - before, true)?;
    let ratio = grpc.events_per_sec() / direct.events_per_sec().max(1.0);
    println!("grpc/direct ratio = {ratio:.2}");
    let after_grpc = rss_kib(pid);

    // 3. REST single writes
    let before = stored_rows();
    let cpu_before = cpu_time(pid);
    let rest = load::rest_single(&url, &key, args.concurrency, bounded(5_000_000));
    let mut rest = within_bound("rest", phase, rest).await?;
    line("rest", &mut rest);
    worker_cpu("rest", &rest, cpu_before, cpu_time(pid));
    acknowledged_were_stored("rest", &rest, stored_rows() - before, true)?;

    // 4. Arc stalls every write: the org's queue (bounded at 10,000 events
    // here) fills, writers get RESOURCE_EXHAUSTED, memory stays bounded
    let revision = cluster
        .set_config("limits.max_queued_events", "10000")
        .await?;
    cluster.wait_applied(revision).await?;
    let before = stored_rows();
    arc.faults().inject(Fault::stall().on(Target::Writes));
    let sampler = {
        let stop_at = Instant::now() + phase;
        tokio::spawn(async move {
            let mut peak = 0;
            while Instant::now() < stop_at {
                peak = peak.max(rss_kib(pid).unwrap_or(0));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            peak
        })
    };
    let stalled = load::grpc_stream(
        "stalled",
        &url,
        &key,
        args.rows,
        args.streams,
        args.window,
        bounded(1_000_000),
    );
    let stalled = within_bound("stalled", phase, stalled);
    let release = async {
        tokio::time::sleep(phase).await;
        arc.faults().clear(); // also releases the stalled writes
    };
    let (stalled, ()) = tokio::join!(stalled, release);
    let peak = sampler.await.unwrap_or(0);
    let mut stalled_run = stalled?;
    line("stalled", &mut stalled_run);
    // writes Arc held may land after their writer gave up: at least, not equal
    acknowledged_were_stored("stalled", &stalled_run, stored_rows() - before, false)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "worker rss: idle={} after-grpc={} stalled-peak={} after-stall={}",
        mib(idle),
        mib(after_grpc),
        mib(Some(peak)),
        mib(rss_kib(pid)),
    );
    worker.stop().await?;
    let Cluster {
        mut etcd,
        control_plane,
        ..
    } = cluster;
    control_plane.stop().await?;
    etcd.stop()?;
    Ok(())
}

/// Runs one load phase, failing when it outlives its bound by a minute
/// (a worker that stops answering must not hang the benchmark).
async fn within_bound(
    name: &str,
    phase: Duration,
    run: impl Future<Output = anyhow::Result<Run>>,
) -> anyhow::Result<Run> {
    tokio::time::timeout(phase + Duration::from_secs(60), run)
        .await
        .with_context(|| format!("the {name} phase did not finish within its bound"))?
}

/// Nothing acknowledged is lost: the stand-in stored at least every
/// acknowledged event. With `exact`, and no request of the phase failed
/// (a failed one may still have been stored), it stored exactly those.
fn acknowledged_were_stored(name: &str, run: &Run, stored: u64, exact: bool) -> anyhow::Result<()> {
    let acked = run.events;
    if stored < acked {
        bail!("{name}: {acked} events acknowledged but the stand-in stored only {stored}");
    }
    if exact && run.errors == 0 && stored != acked {
        bail!("{name}: {acked} events acknowledged but the stand-in stored {stored}");
    }
    println!("{name:<8} acknowledged={acked} stored={stored}");
    Ok(())
}

/// Retries one REST write until the worker has the org's route (bounded).
async fn wait_writable(base: &str, key: &str) -> anyhow::Result<()> {
    let http = memtrace_tests::http_client();
    let url = format!("{base}/api/v1/memories");
    eventually(
        "the worker accepts a write",
        Duration::from_secs(30),
        async || {
            let r = http
                .post(&url)
                .header("x-api-key", key)
                .json(&serde_json::json!({"agent_id": "agent_bench", "content": "warm up"}))
                .send()
                .await
                .map_err(|e| format!("worker unreachable: {e}"))?;
            if r.status().is_success() {
                Ok(())
            } else {
                Err(format!("write answered {}", r.status()))
            }
        },
    )
    .await
}
