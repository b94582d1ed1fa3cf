//! Ingest benchmark of the worker (docs/PERFORMANCE.md). Real etcd, the real
//! control-plane and worker binaries (release), and an in-process Arc
//! stand-in that decodes and counts every write, its answers held by the
//! calibrated cost model (`--cost-model arc`, the default; `instant` is
//! the stand-in without it) — or an Arc already running on loopback
//! (`--arc-url URL --arc-token-file FILE`). Phases, all bounded in time and
//! count and aimed at 127.0.0.1 only:
//!
//! 1. direct: the load generator posts pre-encoded batches straight to the
//!    Arc: with the stand-in, once answered instantly (the ceiling of this
//!    machine and stand-in) and once under the cost model (the ceiling a
//!    real Arc allows, ≈ 200 K rows/s per client);
//! 2. grpc: `StreamMemories` into the worker, which batches into the Arc;
//!    reported as events/s and as a ratio of the direct rate under the same
//!    model;
//! 3. rest: single-memory POSTs shaped like the SDK's `remember` at
//!    concurrency 64: req/s, p50/p99;
//! 4. rss: the worker's resident set idle, and while Arc stalls every write
//!    (gRPC streams fill the org's bounded queue and get RESOURCE_EXHAUSTED),
//!    then after the stall is released (stand-in only: it needs the
//!    stand-in's fault switch).
//!
//! Run with `scripts/bench.sh ingest` (release build).

use anyhow::{Context, bail};
use memtrace_data_plane::arcdb::Compression;
use memtrace_tests::arc::{ArcStandIn, CostModel, Fault, Target};
use memtrace_tests::bench::{ArcUnderTest, ExternalArcFlags, mib};
use memtrace_tests::cluster::{Cluster, eventually};
use memtrace_tests::load::{self, Bounds, DirectTarget, Run, cpu_time, rss_kib};
use std::time::{Duration, Instant};

const USAGE: &str = "usage: ingest-bench [--seconds N (10)] [--rows N per batch (1000)] \
[--streams N (4)] [--window N unacknowledged batches per stream (8)] \
[--concurrency N REST clients (64)] [--dedup on|off (on)] \
[--cost-model arc|instant (arc)] [--arc-lanes N concurrent writes the modelled Arc ingests, 0 = unbounded (2)] [--inflight N the org's arc.max_inflight_writes (2)] [--compression zstd|gzip|none of the direct phase and the worker's writes (zstd)] \
[--arc-url URL --arc-token-file FILE (an Arc already running on loopback instead of the stand-in)]";

/// The measurement the worker writes memories to (the control plane's
/// default for a binding).
const MEASUREMENT: &str = "events";

struct Args {
    seconds: u64,
    rows: usize,
    streams: usize,
    window: usize,
    concurrency: usize,
    dedup: bool,
    model: CostModel,
    compression: Compression,
    inflight: u32,
    external: Option<(String, String)>,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        seconds: 10,
        rows: 1000,
        streams: 4,
        window: 8,
        concurrency: 64,
        dedup: true,
        model: CostModel::arc_like(),
        compression: Compression::Zstd,
        inflight: 2,
        external: None,
    };
    let mut external = ExternalArcFlags::default();
    let mut lanes = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = it
            .next()
            .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        if external.take(&flag, &value) {
            continue;
        }
        match flag.as_str() {
            "--dedup" => {
                a.dedup = match value.as_str() {
                    "on" => true,
                    "off" => false,
                    other => bail!("--dedup takes on or off, got {other}\n{USAGE}"),
                };
                continue;
            }
            "--cost-model" => {
                a.model = match value.as_str() {
                    "arc" => CostModel::arc_like(),
                    "instant" => CostModel::instant(),
                    other => bail!("--cost-model takes arc or instant, got {other}\n{USAGE}"),
                };
                continue;
            }
            "--compression" => {
                a.compression = match value.as_str() {
                    "zstd" => Compression::Zstd,
                    "gzip" => Compression::Gzip,
                    "none" => Compression::None,
                    other => bail!("--compression takes zstd, gzip or none, got {other}\n{USAGE}"),
                };
                continue;
            }
            _ => {}
        }
        let n: u64 = value
            .parse()
            .with_context(|| format!("{flag} takes a number\n{USAGE}"))?;
        match flag.as_str() {
            "--seconds" => a.seconds = n,
            "--rows" => a.rows = n as usize,
            "--streams" => a.streams = n as usize,
            "--window" => a.window = n as usize,
            "--concurrency" => a.concurrency = n as usize,
            "--arc-lanes" => lanes = Some(u32::try_from(n).unwrap_or(u32::MAX)),
            "--inflight" => a.inflight = u32::try_from(n).unwrap_or(u32::MAX),
            other => bail!("unknown flag {other}\n{USAGE}"),
        }
    }
    anyhow::ensure!((1..=120).contains(&a.seconds), "--seconds must be 1..=120");
    anyhow::ensure!((1..=10_000).contains(&a.rows), "--rows must be 1..=10000");
    anyhow::ensure!((1..=64).contains(&a.streams), "--streams must be 1..=64");
    anyhow::ensure!((1..=64).contains(&a.window), "--window must be 1..=64");
    anyhow::ensure!((1..=16).contains(&a.inflight), "--inflight must be 1..=16");
    anyhow::ensure!(
        (1..=1024).contains(&a.concurrency),
        "--concurrency must be 1..=1024"
    );
    if let Some(lanes) = lanes {
        anyhow::ensure!(lanes <= 8, "--arc-lanes must be 0..=8");
        a.model.write_lanes = lanes;
    }
    a.external = external.resolve()?;
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let phase = Duration::from_secs(args.seconds);
    let bounded = |max_requests| Bounds {
        duration: phase,
        max_requests,
    };
    let (arc, database) = match &args.external {
        None => {
            let stand_in = ArcStandIn::builder()
                .counting_only(true)
                .cost_model(args.model)
                .start()
                .await?;
            (ArcUnderTest::stand_in(stand_in), "bench".to_owned())
        }
        Some((url, token)) => {
            let unique = memtrace_data_plane::query::UnixMicros::now().0 / 1_000_000;
            let arc = ArcUnderTest::external(url, token)?;
            (arc, format!("bench_ingest_{unique}"))
        }
    };
    println!("arc: {}; database {database}", arc.describe());
    let target = DirectTarget {
        url: &arc.url(),
        database: &database,
        token: arc.token(),
        compression: args.compression,
    };

    // 1. direct ceilings: this machine's (instant stand-in), then Arc's
    let mut direct = match arc.as_stand_in() {
        Some(stand_in) if !args.model.is_instant() => {
            stand_in.set_cost_model(CostModel::instant());
            let mut ceiling = load::direct_arc(
                target,
                "direct",
                args.rows,
                args.streams,
                bounded(1_000_000),
            )
            .await?;
            line("direct-instant", &mut ceiling);
            stand_in.set_cost_model(args.model);
            load::direct_arc(
                target,
                "direct",
                args.rows,
                args.streams,
                bounded(1_000_000),
            )
            .await?
        }
        _ => {
            load::direct_arc(
                target,
                "direct",
                args.rows,
                args.streams,
                bounded(1_000_000),
            )
            .await?
        }
    };
    line("direct", &mut direct);
    println!(
        "direct   per client: {:.0} rows/s over {} clients ({} model)",
        direct.events_per_sec() / args.streams as f64,
        args.streams,
        arc.as_stand_in()
            .map_or("external arc", |a| a.cost_model().name()),
    );

    // the system under test
    let cluster = Cluster::start("/memtrace-ingest-bench/v1/").await?;
    let org_id = cluster.org("bench").await?;
    cluster
        .add_arc(&org_id, &arc.url(), &database, arc.token())
        .await?;
    let (key, _) = cluster.key(&org_id, "read,write").await?;
    for (setting, value) in [
        ("arc.write_batch_size", "5000"),
        ("limits.requests_per_second", "0"),
        ("dedup.enabled", if args.dedup { "true" } else { "false" }),
        ("arc.write_linger_ms", "5"),
        ("limits.max_queued_events", "200000"),
        ("arc.write_compression", args.compression.name()),
        ("arc.max_inflight_writes", &args.inflight.to_string()),
    ] {
        cluster.set_config(setting, value).await?;
    }
    // quiet, except the startup line the harness reads the address from,
    // until the first snapshot applies the runtime log.level (info: the
    // write path logs nothing at info); and the allocator setting
    // deploy/kubernetes/base/worker.yaml ships with
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
    let mut stored = Stored::new(&arc, &database).await?;
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
    stored.check("grpc", &grpc, true).await?;
    let ratio = grpc.events_per_sec() / direct.events_per_sec().max(1.0);
    println!("grpc/direct ratio = {ratio:.2}");
    let after_grpc = rss_kib(pid);

    // 3. REST single writes
    let cpu_before = cpu_time(pid);
    let rest = load::rest_single(&url, &key, args.concurrency, bounded(5_000_000));
    let mut rest = within_bound("rest", phase, rest).await?;
    line("rest", &mut rest);
    worker_cpu("rest", &rest, cpu_before, cpu_time(pid));
    stored.check("rest", &rest, true).await?;

    // 4. Arc stalls every write: the org's queue (bounded at 10,000 events
    // here) fills, writers get RESOURCE_EXHAUSTED, memory stays bounded
    match arc.as_stand_in() {
        Some(stand_in) => {
            let peak =
                stalled_phase(&cluster, stand_in, &mut stored, (&url, &key, pid), &args).await?;
            println!(
                "worker rss: idle={} after-grpc={} stalled-peak={} after-stall={}",
                mib(idle),
                mib(after_grpc),
                mib(Some(peak)),
                mib(rss_kib(pid)),
            );
        }
        None => {
            println!("stalled  not run: it needs the stand-in's fault switch");
            println!(
                "worker rss: idle={} after-grpc={} now={}",
                mib(idle),
                mib(after_grpc),
                mib(rss_kib(pid)),
            );
        }
    }
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

/// Phase 4; returns the worker's peak RSS in KiB during the stall.
async fn stalled_phase(
    cluster: &Cluster,
    stand_in: &ArcStandIn,
    stored: &mut Stored<'_>,
    (url, key, pid): (&str, &str, u32),
    args: &Args,
) -> anyhow::Result<u64> {
    let phase = Duration::from_secs(args.seconds);
    let revision = cluster
        .set_config("limits.max_queued_events", "10000")
        .await?;
    cluster.wait_applied(revision).await?;
    stand_in.faults().inject(Fault::stall().on(Target::Writes));
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
        url,
        key,
        args.rows,
        args.streams,
        args.window,
        Bounds {
            duration: phase,
            max_requests: 1_000_000,
        },
    );
    let stalled = within_bound("stalled", phase, stalled);
    let release = async {
        tokio::time::sleep(phase).await;
        stand_in.faults().clear(); // also releases the stalled writes
    };
    let (stalled, ()) = tokio::join!(stalled, release);
    let peak = sampler.await.unwrap_or(0);
    let mut stalled_run = stalled?;
    line("stalled", &mut stalled_run);
    // writes Arc held may land after their writer gave up: at least, not equal
    stored.check("stalled", &stalled_run, false).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(peak)
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

/// Counts what the Arc stored of the worker's writes, phase by phase: the
/// stand-in's row counter, or a `COUNT(*)` of the measurement on an
/// external Arc (waiting for its buffer flush).
struct Stored<'a> {
    arc: &'a ArcUnderTest,
    database: &'a str,
    before: u64,
}

impl<'a> Stored<'a> {
    async fn new(arc: &'a ArcUnderTest, database: &'a str) -> anyhow::Result<Self> {
        let mut s = Self {
            arc,
            database,
            before: 0,
        };
        s.before = s.now(0).await?;
        Ok(s)
    }

    /// Rows stored so far; on an external Arc, waits (bounded) until at
    /// least `expect` are readable.
    async fn now(&self, expect: u64) -> anyhow::Result<u64> {
        match self.arc.as_stand_in() {
            Some(a) => Ok(a.stats().db(self.database).rows),
            None => {
                let within = Duration::from_secs(30);
                match self
                    .arc
                    .wait_readable(self.database, MEASUREMENT, expect, within)
                    .await
                {
                    Ok((_, n)) => Ok(n),
                    Err(_) => self.arc.count(self.database, MEASUREMENT).await,
                }
            }
        }
    }

    /// Nothing acknowledged is lost: the Arc stored at least every
    /// acknowledged event. With `exact`, and no request of the phase
    /// failed (a failed one may still have been stored), it stored exactly
    /// those.
    async fn check(&mut self, name: &str, run: &Run, exact: bool) -> anyhow::Result<()> {
        let acked = run.events;
        let total = self.now(self.before + acked).await?;
        let stored = total - self.before;
        self.before = total;
        if stored < acked {
            bail!("{name}: {acked} events acknowledged but the arc stored only {stored}");
        }
        if exact && run.errors == 0 && stored != acked {
            bail!("{name}: {acked} events acknowledged but the arc stored {stored}");
        }
        println!("{name:<8} acknowledged={acked} stored={stored}");
        Ok(())
    }
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
