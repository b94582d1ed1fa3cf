//! The worker process, wired in three steps: [`Worker::build`] assembles
//! every part from the configuration (nothing runs yet), [`Worker::spawn`]
//! starts the background tasks and the server, and the returned
//! [`RunningWorker`] stops it all through one cancellation token.
//!
//! One port serves, in plaintext or with the TLS pair of `[server]
//! tls_cert_file` / `tls_key_file` (loaded by [`Worker::build`], re-read
//! while serving), the probes ([`crate::probes`]), the REST API
//! ([`crate::rest`]), `memtrace.v1` gRPC ([`crate::grpc`]),
//! `grpc.health.v1` and reflection (v1 and v1alpha, listing exactly these:
//! [`memtrace_common::reflection`]). Background tasks: the snapshot
//! watcher, the registration under a lease, the readiness flip of
//! `grpc.health.v1`, the Arc reachability prober, and the closer of queues
//! whose org lost its Arc route.
//!
//! Shutdown (SIGTERM, or [`RunningWorker::shutdown`]): stop accepting
//! connections and new writes at once, flush queued batches to Arc and let
//! in-flight requests get their acks, all within `[server]
//! shutdown_timeout`; then stop the background tasks, and last revoke the
//! registration lease so the worker leaves the fleet at once.

use crate::admission::{Admission, OrgStores};
use crate::arcdb::health::ArcHealth;
use crate::arcdb::{ArcClient, RetryPolicy};
use crate::ingest::{Batcher, IngestGauges};
use crate::probes::Probes;
use crate::registration::{self, WorkerIdentity};
use crate::snapshot::watcher::{Watcher, WatcherOptions};
use crate::snapshot::{SnapshotBuilder, SnapshotHandle};
use crate::store::EmbeddedStores;
use memtrace_common::bus::StateBus;
use memtrace_common::config::MemtraceConfig;
use memtrace_common::fleet::FleetKeyring;
use memtrace_common::requests::{RequestMetrics, tag_route};
use memtrace_common::serve::{ServeSettings, cancel_on, join_within, serve};
use memtrace_common::shutdown::ShutdownSignal;
use memtrace_common::state::StateKeys;
use memtrace_common::tls::ServerTls;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// Why the worker could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("{0}")]
    Startup(String),
    #[error("server failed: {0}")]
    Serve(String),
}

/// Everything the worker needs; the listener is bound by the caller.
pub struct WorkerOptions {
    pub config: MemtraceConfig,
    pub fleet: Arc<FleetKeyring>,
    pub bus: Arc<dyn StateBus>,
    pub listener: tokio::net::TcpListener,
    /// Fires the shutdown (SIGTERM, or a test's trigger).
    pub shutdown: ShutdownSignal,
    /// `HOSTNAME`, for the default worker id.
    pub hostname: Option<String>,
}

/// Longest the background tasks get to stop once the server has drained.
const TASK_STOP_DEADLINE: Duration = Duration::from_secs(3);

/// Builds, runs until the shutdown signal, then drains (see the module docs).
pub async fn run(options: WorkerOptions) -> Result<(), WorkerError> {
    Worker::build(options).await?.spawn().wait().await
}

/// A built, not yet running worker.
pub struct Worker {
    config: MemtraceConfig,
    bus: Arc<dyn StateBus>,
    listener: tokio::net::TcpListener,
    shutdown: ShutdownSignal,
    addr: SocketAddr,
    identity: WorkerIdentity,
    keys: StateKeys,
    handle: Arc<SnapshotHandle>,
    watcher: Watcher,
    client: ArcClient,
    batcher: Batcher,
    arc_health: Arc<ArcHealth>,
    health_reporter: HealthReporter,
    routes: tonic::service::Routes,
    requests: Arc<RequestMetrics>,
    tls: Option<ServerTls>,
}

impl Worker {
    /// Assembles every part; starts nothing.
    pub async fn build(options: WorkerOptions) -> Result<Self, WorkerError> {
        let WorkerOptions {
            config,
            fleet,
            bus,
            listener,
            shutdown,
            hostname,
        } = options;
        let addr = listener
            .local_addr()
            .map_err(|e| WorkerError::Startup(format!("listener has no address: {e}")))?;
        let tls = config
            .server
            .tls_files()
            .and_then(|files| files.map(ServerTls::load).transpose())
            .map_err(|e| WorkerError::Startup(e.to_string()))?;
        let identity = identity(&config, hostname, addr);
        let keys = StateKeys::new(&config.etcd.prefix);
        let handle = Arc::new(SnapshotHandle::default());
        let mut registry = Registry::default();
        handle.register_metrics(&mut registry);
        let watcher = Watcher::new(
            bus.clone(),
            SnapshotBuilder::new(keys.clone(), fleet.clone()),
            handle.clone(),
            WatcherOptions {
                lkg_path: Some(config.worker.snapshot_cache.trim())
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from),
                ..WatcherOptions::default()
            },
        );
        let client = ArcClient::new(
            Duration::from_secs(config.arc.connect_timeout.max(1)),
            Duration::from_secs(config.arc.query_timeout.max(1)),
        )
        .map_err(|e| WorkerError::Startup(format!("arc client: {e}")))?;
        client.metrics().register(&mut registry);
        let batcher = {
            let handle = handle.clone();
            Batcher::new(
                client.clone(),
                move |org: &str| {
                    let snapshot = handle.load();
                    let settings = snapshot.settings();
                    (settings.write(Some(org)), settings.limits(Some(org)))
                },
                RetryPolicy::default(),
            )
        };
        let ingest = IngestGauges::default();
        ingest.register(&mut registry);
        batcher.register_histograms(&mut registry);
        let grpc_methods = memtrace_common::reflection::method_paths(
            memtrace_proto::FILE_DESCRIPTOR_SET,
            &crate::grpc::SERVICES,
        )
        .map_err(|e| WorkerError::Startup(format!("grpc descriptors: {e}")))?;
        let requests = Arc::new(RequestMetrics::new(grpc_methods));
        requests.register(&mut registry);
        let arc_health = Arc::new(ArcHealth::default());
        arc_health.register_metrics(&mut registry);
        let admission = Admission::new(
            handle.clone(),
            Arc::new(OrgStores {
                client: client.clone(),
                batcher: batcher.clone(),
                retry: RetryPolicy::default(),
                embedded: embedded_stores(&config)?,
            }),
        )
        .with_erasures(Arc::new(crate::erasure::ErasureRequests::new(
            bus.clone(),
            keys.clone(),
            fleet.clone(),
            handle.clone(),
        )))
        .with_token_minters(fleet.keys().map(|k| k.token_key()).collect());
        admission.shared.dedup.register_metrics(&mut registry);
        admission.refusals.register(&mut registry);
        admission.legacy_requests.register(&mut registry);
        let probes = Arc::new(Probes {
            snapshot: handle.clone(),
            registry,
            batcher: batcher.clone(),
            ingest,
            arc_health: arc_health.clone(),
            started: Instant::now(),
            worker_id: identity.worker_id.clone(),
        });
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
        let (memories_grpc, agents_grpc, sessions_grpc) = crate::grpc::services(admission.clone());
        let body_timeout =
            crate::rest::BodyTimeout(Duration::from_secs(config.server.read_timeout.max(1)));
        let router = crate::probes::router(probes)
            .merge(crate::rest::router(admission, body_timeout))
            .route_layer(axum::middleware::from_fn(tag_route));
        let routes = tonic::service::Routes::from(router)
            .add_service(health_service)
            .add_service(memories_grpc)
            .add_service(agents_grpc)
            .add_service(sessions_grpc);
        let routes = memtrace_common::reflection::add_reflection(
            routes,
            memtrace_proto::FILE_DESCRIPTOR_SET,
            &crate::grpc::SERVICES,
        )
        .map_err(|e| WorkerError::Startup(format!("grpc reflection: {e}")))?;
        Ok(Self {
            config,
            bus,
            listener,
            shutdown,
            addr,
            identity,
            keys,
            handle,
            watcher,
            client,
            batcher,
            arc_health,
            health_reporter,
            routes,
            requests,
            tls,
        })
    }

    /// The address the worker serves on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts the background tasks and the server.
    pub fn spawn(self) -> RunningWorker {
        let Self {
            config,
            bus,
            listener,
            shutdown,
            addr,
            identity,
            keys,
            handle,
            watcher,
            client,
            batcher,
            arc_health,
            health_reporter,
            routes,
            requests,
            tls,
        } = self;
        let stop = CancellationToken::new();
        // Background tasks stop after the drain (the registration last), so
        // the worker keeps its snapshot and stays counted while it drains.
        let tasks = CancellationToken::new();
        let worker_id = identity.worker_id.clone();
        let registration = tokio::spawn(registration::run(
            bus,
            keys,
            identity,
            handle.clone(),
            Duration::from_millis(config.worker.registration_ttl_ms.max(1_000)),
            Duration::from_millis(200),
            tasks.clone(),
        ));
        let background = vec![
            (
                "snapshot watcher",
                tokio::spawn(watcher.run(tasks.child_token())),
            ),
            (
                "readiness",
                tokio::spawn(report_readiness(
                    handle.clone(),
                    health_reporter,
                    tasks.child_token(),
                )),
            ),
            (
                "arc health",
                tokio::spawn(arc_health.run(
                    client,
                    handle.clone(),
                    Duration::from_secs(config.arc.connect_timeout.clamp(1, 60)),
                    tasks.child_token(),
                )),
            ),
            (
                "route closer",
                tokio::spawn(close_orgs_without_route(
                    batcher.clone(),
                    handle,
                    tasks.child_token(),
                )),
            ),
        ];
        let grace = Duration::from_secs(config.server.shutdown_timeout);
        tracing::info!(%addr, %worker_id, tls = tls.is_some(), "worker listening (/health, /ready, /metrics, /api/v1, grpc memtrace.v1, health, reflection)");
        let task = {
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::spawn(cancel_on(shutdown, stop.clone()));
                let settings = ServeSettings {
                    name: "worker",
                    grace,
                    http2_keepalive: None,
                    tls,
                    metrics: requests,
                };
                // The drain and the flush of queued batches share the grace.
                let flush = async {
                    stop.cancelled().await;
                    batcher.close(grace).await
                };
                let (served, unflushed) =
                    tokio::join!(serve(routes, listener, stop.clone(), settings), flush);
                if unflushed > 0 {
                    tracing::warn!(
                        unflushed,
                        "memory writes not confirmed by arc before shutdown; their requests were failed"
                    );
                }
                tasks.cancel();
                for (what, task) in background {
                    join_within(task, TASK_STOP_DEADLINE, what).await;
                }
                // leave the fleet at once: the registration revokes its lease
                join_within(registration, TASK_STOP_DEADLINE, "worker registration").await;
                served.map_err(|e| WorkerError::Serve(e.to_string()))?;
                tracing::info!("worker stopped");
                Ok(())
            })
        };
        RunningWorker {
            stop,
            addr,
            worker_id,
            task,
        }
    }
}

/// A running worker.
pub struct RunningWorker {
    stop: CancellationToken,
    addr: SocketAddr,
    worker_id: String,
    task: JoinHandle<Result<(), WorkerError>>,
}

impl RunningWorker {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// Cancelling it starts the shutdown, as the injected signal does.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Waits until the worker has stopped.
    pub async fn wait(self) -> Result<(), WorkerError> {
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(WorkerError::Serve(format!("worker task failed: {e}"))),
        }
    }

    /// Starts the shutdown and waits for it.
    pub async fn shutdown(self) -> Result<(), WorkerError> {
        self.stop.cancel();
        self.wait().await
    }
}

/// `[worker] id`, else `<HOSTNAME or "worker">-<6 random hex>`; the
/// advertised address is `[worker] advertise_address`, else the bound one.
fn identity(config: &MemtraceConfig, hostname: Option<String>, addr: SocketAddr) -> WorkerIdentity {
    let worker_id = if config.worker.id.trim().is_empty() {
        let host = hostname
            .filter(|h| !h.trim().is_empty())
            .unwrap_or_else(|| "worker".into());
        format!("{host}-{:06x}", rand::random::<u32>() & 0xff_ffff)
    } else {
        config.worker.id.trim().to_owned()
    };
    let address = if config.worker.advertise_address.trim().is_empty() {
        addr.to_string()
    } else {
        config.worker.advertise_address.trim().to_owned()
    };
    WorkerIdentity {
        worker_id,
        address,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at_ms: memtrace_common::clock::now_ms(),
    }
}

/// The embedded stores of `[worker] embedded_dir`, if set.
fn embedded_stores(config: &MemtraceConfig) -> Result<Option<EmbeddedStores>, WorkerError> {
    let dir = config.worker.embedded_dir.trim();
    if dir.is_empty() {
        return Ok(None);
    }
    let stores = EmbeddedStores::new(dir, &config.arc.measurement)
        .map_err(|e| WorkerError::Startup(format!("embedded store: {e}")))?;
    tracing::info!(dir, "orgs without an arc binding use the embedded store");
    Ok(Some(stores))
}

/// Turns `grpc.health.v1` to SERVING once the first snapshot is in.
async fn report_readiness(
    handle: Arc<SnapshotHandle>,
    reporter: HealthReporter,
    stop: CancellationToken,
) {
    while !handle.is_ready() {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
            () = stop.cancelled() => return,
        }
    }
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
}

/// Fails rows still queued for an org whose route disappeared, instead of
/// writing them to an Arc the org no longer has (checked every second).
async fn close_orgs_without_route(
    batcher: Batcher,
    handle: Arc<SnapshotHandle>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = stop.cancelled() => return,
        }
        let snapshot = handle.load();
        let closed = batcher.close_orgs_without_route(|org| snapshot.route(org).is_some());
        if closed > 0 {
            tracing::info!(
                orgs = closed,
                "queued writes of orgs without an arc route failed"
            );
        }
    }
}
