//! Propagation benchmark: how long a change takes from the admin call
//! returning (with its publication revision W) to every watcher having
//! applied a revision ≥ W. Real etcd on loopback, the real control-plane
//! binary, `--watchers` in-process snapshot watchers (each with its own etcd
//! connection, as separate workers have). Prints p50/p99/max per kind of
//! change. Bounded: `--changes` per kind, each waited for at most 5 s.
//!
//! Run with `scripts/bench.sh propagation` (release build).

use anyhow::{Context, bail};
use memtrace_proto::admin::v1 as pb;
use memtrace_tests::control_plane::{ControlPlane, ControlPlaneSpec};
use memtrace_tests::etcd::EtcdServer;
use memtrace_tests::watchers::{TestWatcher, etcd_bus, fleet};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

const PER_CHANGE_LIMIT: Duration = Duration::from_secs(5);

struct Args {
    changes: usize,
    watchers: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut parsed = Args {
        changes: 200,
        watchers: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--changes" => parsed.changes = value.parse().context("--changes takes a count")?,
            "--watchers" => parsed.watchers = value.parse().context("--watchers takes a count")?,
            other => bail!("unknown flag {other}; use --changes N --watchers N"),
        }
    }
    anyhow::ensure!(
        (1..=10_000).contains(&parsed.changes),
        "--changes must be 1..=10000"
    );
    anyhow::ensure!(
        (1..=32).contains(&parsed.watchers),
        "--watchers must be 1..=32"
    );
    Ok(parsed)
}

fn request<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

fn revision_of<T>(response: &tonic::Response<T>) -> anyhow::Result<i64> {
    response
        .metadata()
        .get("x-memtrace-revision")
        .context("no x-memtrace-revision: publication was deferred")?
        .to_str()?
        .parse()
        .context("revision header is not a number")
}

/// Waits until every watcher applied `revision`; returns when that happened.
async fn wait_all(watchers: &[TestWatcher], revision: i64) -> anyhow::Result<Instant> {
    let started = Instant::now();
    loop {
        if watchers
            .iter()
            .all(|w| w.handle.load().applied_revision >= revision)
        {
            return Ok(Instant::now());
        }
        if started.elapsed() > PER_CHANGE_LIMIT {
            bail!("revision {revision} not applied by every watcher within {PER_CHANGE_LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_micros(100)).await;
    }
}

/// One change: when it was issued, when the call returned, when every watcher had it.
struct Sample {
    issued: Instant,
    returned: Instant,
    applied: Instant,
}

fn report(kind: &str, samples: &[Sample]) {
    let after_return: Vec<Duration> = samples
        .iter()
        .map(|s| s.applied.saturating_duration_since(s.returned))
        .collect();
    let end_to_end: Vec<Duration> = samples.iter().map(|s| s.applied - s.issued).collect();
    print_quantiles(&format!("{kind} (after return)"), after_return);
    print_quantiles(&format!("{kind} (from issue)"), end_to_end);
}

fn print_quantiles(kind: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{kind:<28} n={:<5} p50={:>7.2} ms  p90={:>7.2} ms  p99={:>7.2} ms  max={:>7.2} ms",
        samples.len(),
        ms(at(0.50)),
        ms(at(0.90)),
        ms(at(0.99)),
        ms(at(1.0)),
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let mut etcd = tokio::task::block_in_place(EtcdServer::start)?;
    let dir = tempfile::tempdir()?;
    let fleet_key = memtrace_common::keys::generate_key_b64();
    let prefix = "/memtrace-bench/v1/";
    let mut spec = ControlPlaneSpec::default();
    spec.extra_env
        .insert("MEMTRACE_ETCD_ENDPOINTS".into(), etcd.endpoint());
    spec.extra_env
        .insert("MEMTRACE_ETCD_PREFIX".into(), prefix.into());
    spec.extra_env
        .insert("MEMTRACE_FLEET_KEY".into(), fleet_key.clone());
    spec.extra_env
        .insert("MEMTRACE_LOG_LEVEL".into(), "info".into());
    let cp = ControlPlane::start(dir.path(), spec).await?;
    let token = cp.admin_token()?;
    let channel: Channel = tonic::transport::Endpoint::from_shared(cp.url())?
        .connect()
        .await?;

    let mut watchers = Vec::new();
    for _ in 0..args.watchers {
        watchers.push(TestWatcher::start(
            etcd_bus(&etcd.endpoint()).await?,
            prefix,
            fleet(&fleet_key)?,
            memtrace_data_plane::snapshot::watcher::WatcherOptions::default(),
        ));
    }
    for w in &watchers {
        w.wait_for("first snapshot", Duration::from_secs(10), |_| true)
            .await?;
    }

    // config set: alternate values so every set is a change
    let mut config = pb::config_service_client::ConfigServiceClient::new(channel.clone());
    let mut samples = Vec::with_capacity(args.changes);
    for i in 0..args.changes {
        let value = 100 + (i % 2) * 400;
        let issued = Instant::now();
        let response = config
            .set_setting(request(
                &token,
                pb::SetSettingRequest {
                    key: "arc.write_batch_size".into(),
                    value: value.to_string(),
                    org_id: String::new(),
                },
            ))
            .await?;
        let returned = Instant::now();
        let revision = i64::try_from(response.get_ref().revision)?;
        anyhow::ensure!(revision > 0, "config set publication was deferred");
        let applied = wait_all(&watchers, revision).await?;
        samples.push(Sample {
            issued,
            returned,
            applied,
        });
    }
    println!(
        "propagation to {} watchers, real etcd on 127.0.0.1, {} changes per kind",
        args.watchers, args.changes
    );
    report("config set", &samples);

    // key revoke: create the keys first, then revoke them one by one
    let mut orgs = pb::org_service_client::OrgServiceClient::new(channel.clone());
    let org = orgs
        .create_org(request(
            &token,
            pb::CreateOrgRequest {
                name: "bench".into(),
                ..Default::default()
            },
        ))
        .await?
        .into_inner();
    let mut keys = pb::api_key_service_client::ApiKeyServiceClient::new(channel.clone());
    let mut ids = Vec::with_capacity(args.changes);
    for i in 0..args.changes {
        let created = keys
            .create_api_key(request(
                &token,
                pb::CreateApiKeyRequest {
                    org_id: org.id.clone(),
                    name: format!("k{i}"),
                    scopes: vec![],
                    expires_in_seconds: 0,
                },
            ))
            .await?
            .into_inner();
        ids.push(created.key.context("no key in response")?.id);
    }
    let mut samples = Vec::with_capacity(args.changes);
    for id in ids {
        let issued = Instant::now();
        let response = keys
            .revoke_api_key(request(&token, pb::RevokeApiKeyRequest { key_id: id }))
            .await?;
        let returned = Instant::now();
        let revision = revision_of(&response)?;
        let applied = wait_all(&watchers, revision).await?;
        samples.push(Sample {
            issued,
            returned,
            applied,
        });
    }
    report("key revoke", &samples);
    drop(watchers);
    cp.stop().await?;
    tokio::task::block_in_place(|| etcd.stop())?;
    Ok(())
}
