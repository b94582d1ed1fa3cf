//! The cluster a fault scenario runs on: a real etcd and control plane
//! ([`Cluster`]), N real `memtrace-worker` processes, and one org bound to
//! an Arc stand-in database, with a read-write key. Workers can be killed
//! (SIGKILL), stopped (SIGTERM) and started again; [`Endpoints`] follows
//! them so the clients of a [`super::Load`] do too.

use super::driver::{Endpoints, LoadSpec};
use super::history::{History, Report};
use super::readback;
use crate::arc::{ArcStandIn, ArcStandInBuilder, CostModel, TokenGrant};
use crate::cluster::Cluster;
use crate::worker::Worker;
use anyhow::Context;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How to build a [`Rig`].
pub struct RigSpec {
    /// The etcd prefix (unique per scenario).
    pub prefix: String,
    pub workers: usize,
    /// Extra environment of every worker (e.g. a shorter Arc timeout).
    pub worker_env: Vec<(String, String)>,
    /// Extra environment of the worker in one slot (every process started
    /// in it, replacements included), after `worker_env`.
    pub slot_env: Vec<(usize, String, String)>,
    /// Global settings set before the workers start.
    pub settings: Vec<(String, String)>,
    /// The stand-in (its token and database are added by the rig).
    pub arc: ArcStandInBuilder,
    /// The control plane's database (`None`: SQLite in its data dir).
    pub database_url: Option<String>,
}

impl RigSpec {
    /// `workers` workers, an instant stand-in, the org's rate limit off.
    pub fn new(prefix: &str, workers: usize) -> Self {
        Self {
            prefix: prefix.to_owned(),
            workers,
            worker_env: Vec::new(),
            slot_env: Vec::new(),
            settings: vec![("limits.requests_per_second".into(), "0".into())],
            arc: ArcStandIn::builder().cost_model(CostModel::instant()),
            database_url: None,
        }
    }

    pub fn worker_env(mut self, k: &str, v: &str) -> Self {
        self.worker_env.push((k.into(), v.into()));
        self
    }

    /// `k=v` for the worker in slot `slot` only.
    pub fn slot_env(mut self, slot: usize, k: &str, v: &str) -> Self {
        self.slot_env.push((slot, k.into(), v.into()));
        self
    }

    pub fn setting(mut self, k: &str, v: &str) -> Self {
        self.settings.push((k.into(), v.into()));
        self
    }

    pub fn arc(mut self, builder: ArcStandInBuilder) -> Self {
        self.arc = builder;
        self
    }

    /// The control plane keeps its state in the database at `url`.
    pub fn database_url(mut self, url: &str) -> Self {
        self.database_url = Some(url.to_owned());
        self
    }
}

/// The token and database of the rig's org on the stand-in.
pub const ARC_TOKEN: &str = "arc-faults-token-0123456789abcdef";
pub const DATABASE: &str = "faults";

pub struct Rig {
    pub cluster: Cluster,
    pub arc: ArcStandIn,
    pub org: String,
    pub key: String,
    pub workers: Vec<Option<Worker>>,
    pub endpoints: Endpoints,
    env: Vec<(String, String)>,
    slot_env: Vec<(usize, String, String)>,
    starts: usize,
}

impl Rig {
    /// The peak RSS (KiB) of each running worker.
    pub fn peak_rss_kib(&self) -> Vec<u64> {
        self.workers
            .iter()
            .flatten()
            .filter_map(|w| w.pid().and_then(crate::load::peak_rss_kib))
            .collect()
    }

    pub async fn start(spec: RigSpec) -> anyhow::Result<Self> {
        let cluster = match &spec.database_url {
            Some(url) => Cluster::start_on_database(&spec.prefix, url).await?,
            None => Cluster::start(&spec.prefix).await?,
        };
        let arc = spec
            .arc
            .token(ARC_TOKEN, TokenGrant::databases([DATABASE]))
            .start()
            .await?;
        let org = cluster.org("faults").await?;
        cluster
            .add_arc(&org, &arc.url(), DATABASE, Some(ARC_TOKEN))
            .await?;
        let (key, _) = cluster.key(&org, "read,write").await?;
        for (k, v) in &spec.settings {
            cluster.set_config(k, v).await?;
        }
        let mut rig = Self {
            cluster,
            arc,
            org,
            key,
            workers: Vec::new(),
            endpoints: Endpoints::default(),
            env: spec.worker_env,
            slot_env: spec.slot_env,
            starts: 0,
        };
        let mut urls = Vec::new();
        for slot in 0..spec.workers {
            let w = rig.spawn_worker(slot).await?;
            urls.push(w.url());
            rig.workers.push(Some(w));
        }
        rig.endpoints = Endpoints::new(urls)?;
        Ok(rig)
    }

    async fn spawn_worker(&mut self, slot: usize) -> anyhow::Result<Worker> {
        let id = format!("faults-w{}", self.starts);
        self.starts += 1;
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(
                self.slot_env
                    .iter()
                    .filter(|(s, _, _)| *s == slot)
                    .map(|(_, k, v)| (k.as_str(), v.as_str())),
            )
            .collect();
        self.cluster.worker(&id, &env).await
    }

    /// Worker `i`, which must be running.
    pub fn worker(&self, i: usize) -> &Worker {
        self.workers[i].as_ref().expect("worker running")
    }

    /// SIGKILL to worker `i`; clients stop picking it.
    pub async fn kill_worker(&mut self, i: usize) -> anyhow::Result<ExitStatus> {
        let w = self.workers[i].take().context("worker not running")?;
        let status = w.kill().await?;
        self.endpoints.set(i, None);
        Ok(status)
    }

    /// SIGTERM to worker `i` (it flushes and answers what it holds);
    /// clients keep it until it is gone, as a load balancer would.
    pub async fn stop_worker(&mut self, i: usize) -> anyhow::Result<(ExitStatus, String)> {
        let w = self.workers[i].take().context("worker not running")?;
        let log = w.log_path.clone();
        let status = w.stop().await?;
        self.endpoints.set(i, None);
        Ok((status, std::fs::read_to_string(log).unwrap_or_default()))
    }

    /// Starts a new worker in slot `i`; returns how long until it was ready
    /// and in sync.
    pub async fn start_worker(&mut self, i: usize) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let w = self.spawn_worker(i).await?;
        self.endpoints.set(i, Some(w.url()));
        self.workers[i] = Some(w);
        Ok(started.elapsed())
    }

    /// The URLs of the running workers.
    pub fn urls(&self) -> Vec<String> {
        self.workers.iter().flatten().map(Worker::url).collect()
    }

    /// Reads everything back (API of every running worker, and the
    /// stand-in) and checks `history` against it.
    pub async fn check(
        &self,
        history: &Arc<Mutex<History>>,
        spec: &LoadSpec,
    ) -> anyhow::Result<Report> {
        let started = Instant::now();
        let observed = readback::observe(
            &self.urls(),
            &self.key,
            &spec.agents(),
            &self.arc,
            DATABASE,
            &self.org,
        )
        .await?;
        eprintln!(
            "read back {} API reads and {} stored rows in {:?}",
            observed.api_reads.len(),
            observed.stored_rows.len(),
            started.elapsed()
        );
        let h = history
            .lock()
            .map_err(|_| anyhow::anyhow!("history lock"))?;
        Ok(h.check(&observed))
    }
}
