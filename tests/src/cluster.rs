//! A whole memtrace cluster for end-to-end tests: a real etcd, the real
//! control plane publishing to it, `memtracectl` against it, and workers
//! started on demand, each waited for until it is ready and has applied
//! everything published so far.

use crate::arc::{ArcStandIn, CostModel, TokenGrant};
use crate::cli::Ctl;
use crate::control_plane::{ControlPlane, ControlPlaneSpec};
use crate::etcd::EtcdServer;
use crate::pki::ServedTls;
use crate::worker::Worker;
use anyhow::Context;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// etcd + control plane + CLI, in one temp directory.
pub struct Cluster {
    pub etcd: EtcdServer,
    pub control_plane: ControlPlane,
    pub ctl: Ctl,
    pub fleet_key: String,
    pub prefix: String,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts etcd and the control plane (publishing under `prefix`).
    pub async fn start(prefix: &str) -> anyhow::Result<Self> {
        Self::start_with_tls(prefix, None).await
    }

    /// [`Cluster::start`], the control plane serving TLS with `tls` if given
    /// (the CLI then trusts its CA).
    pub async fn start_with_tls(prefix: &str, tls: Option<ServedTls>) -> anyhow::Result<Self> {
        Self::start_with(prefix, tls, None, &[]).await
    }

    /// [`Cluster::start_on_database`], the control plane getting `env` too.
    pub async fn start_on_database_with_env(
        prefix: &str,
        database_url: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        Self::start_with(prefix, None, Some(database_url.to_owned()), env).await
    }

    /// [`Cluster::start`], the control plane getting `env` too (e.g.
    /// `MEMTRACE_CONTROL_PLANE_*` settings).
    pub async fn start_with_env(prefix: &str, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::start_with(prefix, None, None, env).await
    }

    /// [`Cluster::start`] with the control plane's database at
    /// `database_url` (PostgreSQL; `None`: SQLite in its data dir).
    pub async fn start_on_database(prefix: &str, database_url: &str) -> anyhow::Result<Self> {
        Self::start_with(prefix, None, Some(database_url.to_owned()), &[]).await
    }

    async fn start_with(
        prefix: &str,
        tls: Option<ServedTls>,
        database_url: Option<String>,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let etcd = tokio::task::block_in_place(EtcdServer::start)?;
        let dir = tempfile::tempdir()?;
        let fleet_key = memtrace_common::keys::generate_key_b64();
        let mut spec = ControlPlaneSpec {
            tls,
            database_url,
            ..ControlPlaneSpec::default()
        };
        for (k, v) in [
            ("MEMTRACE_ETCD_ENDPOINTS", etcd.endpoint()),
            ("MEMTRACE_ETCD_PREFIX", prefix.to_owned()),
            ("MEMTRACE_FLEET_KEY", fleet_key.clone()),
        ] {
            spec.extra_env.insert(k.into(), v);
        }
        for (k, v) in env {
            spec.extra_env.insert((*k).into(), (*v).into());
        }
        let control_plane = ControlPlane::start(dir.path(), spec).await?;
        let ctl = Ctl {
            server: control_plane.url(),
            token: control_plane.admin_token()?,
            ca_file: control_plane.ca_file().map(Path::to_owned),
        };
        Ok(Self {
            etcd,
            control_plane,
            ctl,
            fleet_key,
            prefix: prefix.to_owned(),
            dir,
        })
    }

    /// Starts the control plane again on its data (after a stop or a
    /// kill), with the same keys and token; the CLI follows it to its new
    /// address. Returns how long it took to be ready.
    pub async fn restart_control_plane(&mut self) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let spec = self.control_plane.spec.clone();
        self.control_plane = ControlPlane::start(self.dir.path(), spec).await?;
        self.ctl.server = self.control_plane.url();
        Ok(started.elapsed())
    }

    /// Starts one more control plane like the first (same database, etcd
    /// prefix, keys and admin token; its own address and log): a replica
    /// when the database is shared (PostgreSQL). Waits until it is ready.
    pub async fn replica(&self) -> anyhow::Result<ControlPlane> {
        ControlPlane::start(self.dir.path(), self.control_plane.spec.clone()).await
    }

    /// A CLI against `control_plane` (a replica of this cluster).
    pub fn ctl_for(&self, control_plane: &ControlPlane) -> Ctl {
        Ctl {
            server: control_plane.url(),
            token: self.ctl.token.clone(),
            ca_file: control_plane.ca_file().map(Path::to_owned),
        }
    }

    /// Creates an org; returns its id.
    pub async fn org(&self, name: &str) -> anyhow::Result<String> {
        let org = self.ctl.json(&["org", "create", name]).await?;
        Ok(org["id"].as_str().context("org id")?.to_owned())
    }

    /// Binds `org_id` to the Arc instance at `url` (`database`, with
    /// `api_key` when given) through `memtracectl org add-arc`.
    pub async fn add_arc(
        &self,
        org_id: &str,
        url: &str,
        database: &str,
        api_key: Option<&str>,
    ) -> anyhow::Result<()> {
        let mut args = vec![
            "org",
            "add-arc",
            org_id,
            "--url",
            url,
            "--database",
            database,
        ];
        if let Some(api_key) = api_key {
            args.extend(["--api-key", api_key]);
        }
        self.ctl.json(&args).await?;
        Ok(())
    }

    /// Creates a key of `org_id` with `scopes`; returns (secret, key id).
    pub async fn key(&self, org_id: &str, scopes: &str) -> anyhow::Result<(String, String)> {
        static KEYS: AtomicU64 = AtomicU64::new(0);
        let name = format!("{scopes}-{}", KEYS.fetch_add(1, Ordering::Relaxed));
        let key = self
            .ctl
            .json(&[
                "key", "create", "--org", org_id, "--name", &name, "--scopes", scopes,
            ])
            .await?;
        Ok((
            key["key"].as_str().context("key secret")?.to_owned(),
            key["id"].as_str().context("key id")?.to_owned(),
        ))
    }

    /// Sets a global setting through `memtracectl config set`; returns the
    /// revision it was published at.
    pub async fn set_config(&self, setting: &str, value: &str) -> anyhow::Result<i64> {
        let set = self.ctl.json(&["config", "set", setting, value]).await?;
        set["revision"]
            .as_i64()
            .with_context(|| format!("config set {setting}: no revision in {set}"))
    }

    /// Waits until every registered worker (at least one) has applied
    /// `revision`.
    pub async fn wait_applied(&self, revision: i64) -> anyhow::Result<()> {
        eventually(
            &format!("revision {revision} applied by every worker"),
            Duration::from_secs(20),
            async || -> Result<(), String> {
                let status = self
                    .ctl
                    .json(&["status"])
                    .await
                    .map_err(|e| format!("memtracectl status: {e:#}"))?;
                let workers = status["workers"].as_array().map(Vec::as_slice);
                let all = workers.is_some_and(|w| {
                    !w.is_empty()
                        && w.iter()
                            .all(|w| w["applied_revision"].as_i64() >= Some(revision))
                });
                if all { Ok(()) } else { Err(status.to_string()) }
            },
        )
        .await
    }

    /// Starts worker `id`; returns once it is ready and in sync.
    pub async fn worker(&self, id: &str, extra_env: &[(&str, &str)]) -> anyhow::Result<Worker> {
        self.worker_with_tls(id, None, extra_env).await
    }

    /// [`Cluster::worker`], serving TLS with `tls` if given.
    pub async fn worker_with_tls(
        &self,
        id: &str,
        tls: Option<&ServedTls>,
        extra_env: &[(&str, &str)],
    ) -> anyhow::Result<Worker> {
        let worker = Worker::spawn(
            self.dir.path(),
            id,
            &self.etcd.endpoint(),
            &self.prefix,
            &self.fleet_key,
            tls,
            extra_env,
        )
        .await?;
        self.wait_in_sync(&worker)
            .await
            .with_context(|| format!("worker {id}; its log:\n{}", worker.logs()))?;
        Ok(worker)
    }

    /// Waits until `worker` is ready and registered, something has been
    /// published (create an org first), and every worker applied the latest
    /// published revision.
    pub async fn wait_in_sync(&self, worker: &Worker) -> anyhow::Result<()> {
        let http = worker.client();
        eventually(
            "worker ready and in sync",
            Duration::from_secs(20),
            async || -> Result<(), String> {
                let ready = match http.get(format!("{}/ready", worker.url())).send().await {
                    Ok(r) => r.status().as_u16(),
                    Err(e) => return Err(format!("/ready: {e}")),
                };
                let status = self
                    .ctl
                    .json(&["status"])
                    .await
                    .map_err(|e| format!("memtracectl status: {e:#}"))?;
                let registered = status["workers"].as_array().is_some_and(|workers| {
                    workers.iter().any(|w| w["worker_id"] == worker.id.as_str())
                });
                let published = status["published_revision"].as_i64() > Some(0);
                let all_in_sync = status["workers_in_sync"] == status["workers_total"];
                if ready == 200 && registered && published && all_in_sync {
                    Ok(())
                } else {
                    Err(format!("/ready answered {ready}; status: {status}"))
                }
            },
        )
        .await
    }
}

/// An Arc stand-in where `token` may read, write and delete in `database`
/// (and only it) — what a binding's token needs for memtrace to erase —
/// answering instantly (for behaviour tests; measure with
/// [`CostModel::arc_like`]).
pub async fn arc_with_token(token: &str, database: &str) -> anyhow::Result<ArcStandIn> {
    ArcStandIn::builder()
        .cost_model(CostModel::instant())
        .token(token, TokenGrant::databases([database]).with_delete())
        .start()
        .await
}

/// What a probe of [`eventually`] answers: `Some`/`Ok` ends the wait;
/// `None` or `Err` means "not yet", and an `Err` says why, so a timeout
/// reports the last reason instead of only that time ran out.
pub trait Probe {
    type Value;
    /// The value, or why not yet (`None`: no reason given).
    fn into_result(self) -> Result<Self::Value, Option<String>>;
}

impl<T> Probe for Option<T> {
    type Value = T;
    fn into_result(self) -> Result<T, Option<String>> {
        self.ok_or(None)
    }
}

impl<T, E: std::fmt::Display> Probe for Result<T, E> {
    type Value = T;
    fn into_result(self) -> Result<T, Option<String>> {
        self.map_err(|e| Some(e.to_string()))
    }
}

/// Polls `probe` every 100 ms until it answers `Some` or `Ok`, for at most
/// `within`; the timeout error carries the probe's last `Err`.
pub async fn eventually<P: Probe>(
    what: &str,
    within: Duration,
    mut probe: impl AsyncFnMut() -> P,
) -> anyhow::Result<P::Value> {
    let deadline = Instant::now() + within;
    loop {
        let last = match probe().await.into_result() {
            Ok(value) => return Ok(value),
            Err(why) => why,
        };
        if Instant::now() >= deadline {
            match last {
                Some(why) => {
                    anyhow::bail!("timed out after {within:?} waiting for {what}; last: {why}")
                }
                None => anyhow::bail!("timed out after {within:?} waiting for {what}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_timeout_reports_the_probes_last_reason() {
        let mut tries = 0;
        let err = eventually("nothing", Duration::from_millis(250), async || {
            tries += 1;
            Err::<(), _>(format!("try {tries} refused"))
        })
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("waiting for nothing"), "{err}");
        assert!(err.contains(&format!("last: try {tries} refused")), "{err}");
        let value = eventually("a value", Duration::from_secs(1), async || Some(7))
            .await
            .unwrap();
        assert_eq!(value, 7);
    }
}
