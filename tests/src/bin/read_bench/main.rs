//! Read benchmark of the worker. Real etcd, the real control-plane and
//! worker binaries (release), and the in-process Arc stand-in under the
//! calibrated cost model with Arc's visibility delay (`--cost-model arc`,
//! `--visibility-delay on`, the defaults) — or an Arc already running on
//! loopback (`--arc-url URL --arc-token-file FILE`). Steps, each bounded in
//! count and time and aimed at 127.0.0.1 only:
//!
//! 1. setup: agents and their sessions registered through the worker's
//!    REST API (the stand-in answers instantly for this step only: it is
//!    not measured, and 1,000 serialised agent registrations at ~50 ms of
//!    modelled Arc time each would take most of a minute);
//! 2. ingest: N memories (see `dataset`) streamed through `StreamMemories`
//!    (dedup off: every memory is unique, and the lookups are not what is
//!    measured here), then a wait until all N are readable;
//! 3. reads: for each case (see `cases`), p50/p90/p99 of the worker route
//!    and of the plain query straight to the store, in the same run, one
//!    request at a time, with the ratio worker/direct; on the stand-in also
//!    the statements, modelled and SQLite time per request.
//!
//! Run with `scripts/bench.sh reads` (release build).

mod cases;
mod dataset;

use anyhow::{Context, bail};
use cases::{Case, Ctx, Outcome, Side};
use dataset::{Dataset, DatasetSource};
use memtrace_tests::arc::{ArcStandIn, Buffering, CostModel, Limits};
use memtrace_tests::bench::{ArcUnderTest, ExternalArcFlags, mib};
use memtrace_tests::cluster::Cluster;
use memtrace_tests::load::{self, BatchSource, Bounds, rss_kib};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: read-bench [--memories N (1000000)] [--agents N (1000)] \
[--sessions N per agent (2)] [--requests N per case and side (40)] [--seconds N per case (20)] \
[--rows N memories per streamed batch (1000)] [--streams N (2)] \
[--cost-model arc|instant (arc)] [--visibility-delay on|off (on)] \
[--arc-url URL --arc-token-file FILE (an Arc already running on loopback instead of the stand-in)]";

/// The measurement the worker writes memories to (the control plane's
/// default for a binding).
const MEASUREMENT: &str = "events";

struct Args {
    memories: u64,
    agents: usize,
    sessions: usize,
    requests: u64,
    seconds: u64,
    rows: u64,
    streams: usize,
    model: CostModel,
    visibility_delay: bool,
    external: Option<(String, String)>,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        memories: 1_000_000,
        agents: 1000,
        sessions: 2,
        requests: 40,
        seconds: 20,
        rows: 1000,
        streams: 2,
        model: CostModel::arc_like(),
        visibility_delay: true,
        external: None,
    };
    let mut external = ExternalArcFlags::default();
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
        match (flag.as_str(), value.as_str()) {
            ("--cost-model", "arc") => a.model = CostModel::arc_like(),
            ("--cost-model", "instant") => a.model = CostModel::instant(),
            ("--visibility-delay", "on") => a.visibility_delay = true,
            ("--visibility-delay", "off") => a.visibility_delay = false,
            ("--cost-model" | "--visibility-delay", other) => {
                bail!("{flag}: unexpected value {other}\n{USAGE}")
            }
            _ => {
                let n: u64 = value
                    .parse()
                    .with_context(|| format!("{flag} takes a number\n{USAGE}"))?;
                match flag.as_str() {
                    "--memories" => a.memories = n,
                    "--agents" => a.agents = n as usize,
                    "--sessions" => a.sessions = n as usize,
                    "--requests" => a.requests = n,
                    "--seconds" => a.seconds = n,
                    "--rows" => a.rows = n,
                    "--streams" => a.streams = n as usize,
                    other => bail!("unknown flag {other}\n{USAGE}"),
                }
            }
        }
    }
    anyhow::ensure!(
        (1..=5_000_000).contains(&a.memories),
        "--memories must be 1..=5000000"
    );
    anyhow::ensure!(
        (1..=20_000).contains(&a.agents),
        "--agents must be 1..=20000"
    );
    anyhow::ensure!((1..=50).contains(&a.sessions), "--sessions must be 1..=50");
    anyhow::ensure!(
        (1..=10_000).contains(&a.requests),
        "--requests must be 1..=10000"
    );
    anyhow::ensure!((1..=600).contains(&a.seconds), "--seconds must be 1..=600");
    anyhow::ensure!((1..=10_000).contains(&a.rows), "--rows must be 1..=10000");
    anyhow::ensure!((1..=16).contains(&a.streams), "--streams must be 1..=16");
    a.external = external.resolve()?;
    Ok(a)
}

fn own_rss() -> String {
    mib(rss_kib(std::process::id()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let started = Instant::now();
    let (arc, database) = match &args.external {
        None => {
            // room for the memories and the state rows, with headroom
            let limits = Limits {
                max_rows: (args.memories * 2).max(2_000_000),
                max_query_rows: usize::try_from(args.memories)
                    .unwrap_or(usize::MAX)
                    .max(100_000),
                ..Limits::default()
            };
            let stand_in = ArcStandIn::builder()
                .limits(limits)
                .cost_model(CostModel::instant()) // setup only, see step 1
                .buffering(Buffering::arc_default())
                // speeds up the stand-in's SQLite only (no answer, no modelled cost)
                .engine_indexes(["id", "agent_id", "session_id"])
                .start()
                .await?;
            (ArcUnderTest::stand_in(stand_in), "bench".to_owned())
        }
        Some((url, token)) => {
            let unique = memtrace_data_plane::query::UnixMicros::now().0 / 1_000_000;
            let arc = ArcUnderTest::external(url, token)?;
            (arc, format!("bench_reads_{unique}"))
        }
    };

    let cluster = Cluster::start("/memtrace-read-bench/v1/").await?;
    let org = cluster.org("bench").await?;
    cluster
        .add_arc(&org, &arc.url(), &database, arc.token())
        .await?;
    let (key, _) = cluster.key(&org, "read,write").await?;
    for (setting, value) in [
        ("arc.write_batch_size", "5000"),
        ("arc.write_linger_ms", "5"),
        ("limits.requests_per_second", "0"),
        ("limits.max_queued_events", "200000"),
        ("dedup.enabled", "false"),
    ] {
        cluster.set_config(setting, value).await?;
    }
    let quiet = [
        (
            "MEMTRACE_LOG_LEVEL",
            "warn,memtrace_data_plane::worker=info",
        ),
        ("MIMALLOC_ARENA_EAGER_COMMIT", "0"),
    ];
    let worker = cluster.worker("read-bench-worker", &quiet).await?;
    let pid = worker.pid().context("worker pid")?;
    let url = worker.url();

    // 1. setup
    let t = Instant::now();
    let (agents, sessions) = dataset::register(
        &url,
        &key,
        args.agents,
        args.sessions,
        Duration::from_secs(1800),
    )
    .await?;
    println!(
        "setup    {} agents, {} sessions in {:.1}s",
        agents.len(),
        agents.len() * args.sessions,
        t.elapsed().as_secs_f64()
    );
    if let Some(a) = arc.as_stand_in() {
        a.set_buffering(Buffering::arc_default(), args.visibility_delay)?;
        a.set_cost_model(args.model);
    }
    println!(
        "arc: {}; database {database}; visibility delay {}",
        arc.describe(),
        match (arc.as_stand_in(), args.visibility_delay) {
            (None, _) => "as the external Arc has it",
            (Some(_), true) => "on (Arc's 5 s / 50,000-row flush)",
            (Some(_), false) => "off",
        }
    );

    // 2. ingest
    let data = Arc::new(Dataset {
        memories: args.memories,
        agents,
        sessions,
    });
    let next = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(1800);
    let sources: Vec<Box<dyn BatchSource>> = (0..args.streams)
        .map(|_| {
            Box::new(DatasetSource {
                data: data.clone(),
                next: next.clone(),
                rows: args.rows,
                deadline,
            }) as Box<dyn BatchSource>
        })
        .collect();
    let mut ingest = load::grpc_stream_from(&url, &key, sources, 8).await?;
    let ack_p50 = ingest.percentile_ms(50.0);
    println!(
        "ingest   {} memories acknowledged in {:.1}s ({:.0}/s, ack p50 {:.1} ms), errors {}",
        ingest.events,
        ingest.elapsed.as_secs_f64(),
        ingest.events_per_sec(),
        ack_p50,
        ingest.errors,
    );
    if ingest.events != args.memories || ingest.errors != 0 {
        bail!(
            "{} of {} memories acknowledged, {} errors",
            ingest.events,
            args.memories,
            ingest.errors
        );
    }
    let (waited, readable) = arc
        .wait_readable(
            &database,
            MEASUREMENT,
            args.memories,
            Duration::from_secs(120),
        )
        .await?;
    println!(
        "readable {readable} rows {:.1}s after the last ack; rss: worker {}, bench process (stand-in + generator) {}",
        waited.as_secs_f64(),
        mib(rss_kib(pid)),
        own_rss(),
    );

    // 3. reads
    let ctx = Ctx {
        http: reqwest::Client::new(),
        worker: url.clone(),
        key: key.clone(),
        arc: &arc,
        table: format!("{database}.{MEASUREMENT}"),
        org: org.clone(),
        data: &data,
    };
    let bounds = Bounds {
        duration: Duration::from_secs(args.seconds),
        max_requests: args.requests,
    };
    let mut outcomes = Vec::new();
    for case in Case::ALL {
        let mut o = cases::measure(&ctx, case, bounds).await;
        report(&mut o, arc.as_stand_in().is_some());
        outcomes.push(o);
    }
    summary(&mut outcomes);
    println!(
        "rss at the end: worker {}, bench process (stand-in + generator) {}; total {:.0}s",
        mib(rss_kib(pid)),
        own_rss(),
        started.elapsed().as_secs_f64()
    );

    worker.stop().await?;
    let Cluster {
        mut etcd,
        control_plane,
        ..
    } = cluster;
    control_plane.stop().await?;
    etcd.stop()?;
    let problems: u64 = outcomes.iter().map(|o| o.problem_count).sum();
    if problems > 0 {
        bail!("{problems} failed requests or mismatched answers (see above)");
    }
    Ok(())
}

fn per_request(side: &Side) -> String {
    let n = side.lat.len().max(1) as f64;
    let ms = |d: Duration| d.as_secs_f64() * 1e3 / n;
    format!(
        "statements {:.1}, rows scanned {:.0}, modelled {:.1} ms, sqlite {:.1} ms, sqlite over the model {}",
        side.statements as f64 / n,
        side.rows_scanned as f64 / n,
        ms(side.modelled),
        ms(side.engine),
        side.engine_bound,
    )
}

fn report(o: &mut Outcome, stand_in: bool) {
    println!("\n{}", o.case.name());
    for (name, side) in [("worker", &mut o.worker), ("direct", &mut o.direct)] {
        println!(
            "  {name}  n={:<4} p50={:>8.1} ms  p90={:>8.1} ms  p99={:>8.1} ms  errors={}",
            side.lat.len(),
            side.lat.percentile_ms(50.0),
            side.lat.percentile_ms(90.0),
            side.lat.percentile_ms(99.0),
            side.lat.errors,
        );
        if stand_in {
            println!("          per request: {}", per_request(side));
        }
    }
    for p in &o.problems {
        println!("  PROBLEM: {p}");
    }
}

/// The figures once more as a markdown table, for docs/PERFORMANCE.md. A
/// row where the stand-in's SQLite took longer than the model on some
/// statements says so: its figures are the stand-in's, not Arc's.
fn summary(outcomes: &mut [Outcome]) {
    println!(
        "\n| read | worker p50 / p90 / p99 | direct p50 / p90 / p99 | worker/direct p50 / p99 |"
    );
    println!("|---|---|---|---|");
    for o in outcomes {
        let [w50, w90, w99, d50, d90, d99] = [
            o.worker.lat.percentile_ms(50.0),
            o.worker.lat.percentile_ms(90.0),
            o.worker.lat.percentile_ms(99.0),
            o.direct.lat.percentile_ms(50.0),
            o.direct.lat.percentile_ms(90.0),
            o.direct.lat.percentile_ms(99.0),
        ];
        let over = o.worker.engine_bound + o.direct.engine_bound;
        let statements = o.worker.statements + o.direct.statements;
        let note = if over > 0 {
            format!(" (stand-in SQLite slower than the model on {over} of {statements} statements)")
        } else {
            String::new()
        };
        println!(
            "| {}{note} | {w50:.0} / {w90:.0} / {w99:.0} ms | {d50:.0} / {d90:.0} / {d99:.0} ms | {:.2} / {:.2} |",
            o.case.name(),
            w50 / d50.max(1e-9),
            w99 / d99.max(1e-9),
        );
    }
}
