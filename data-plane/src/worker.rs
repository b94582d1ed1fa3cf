//! The worker process: one port serving the HTTP probes, `/metrics`,
//! `grpc.health.v1` and the memtrace-compatible REST API ([`crate::rest`]),
//! the snapshot watcher, and the registration under a lease. Stateless: all
//! it knows comes from the state bus. Each request's store is picked from
//! the live snapshot ([`OrgStores`]): the org's Arc route → [`ArcStore`]
//! (memories through the shared group-commit [`Batcher`], flushed on
//! shutdown); no route and `[worker] embedded_dir` set → the org's
//! [`EmbeddedStore`](crate::store::embedded::EmbeddedStore); else 503 "no
//! arc instance".

use crate::arc::{ArcClient, RetryPolicy};
use crate::arc_health::ArcHealth;
use crate::ingest::{Batcher, IngestGauges};
use crate::registration::{self, WorkerIdentity};
use crate::rest::{RestState, StoreResolver};
use crate::service::{ServiceError, ServiceShared};
use crate::snapshot::Snapshot;
use crate::snapshot::watcher::{Watcher, WatcherOptions};
use crate::snapshot::{SnapshotBuilder, SnapshotHandle};
use crate::store::TenantStore;
use crate::store::arc::ArcStore;
use crate::store::embedded::EmbeddedStores;
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use memtrace_common::bus::StateBus;
use memtrace_common::config::MemtraceConfig;
use memtrace_common::fleet::FleetKeyring;
use memtrace_common::shutdown::ShutdownSignal;
use memtrace_common::state::StateKeys;
use prometheus_client::registry::Registry;
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

/// Why the worker could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("{0}")]
    Startup(String),
    #[error("server failed: {0}")]
    Serve(String),
}

/// Everything [`run`] needs; the listener is bound by the caller.
pub struct WorkerOptions {
    pub config: MemtraceConfig,
    pub fleet: Arc<FleetKeyring>,
    pub bus: Arc<dyn StateBus>,
    pub listener: tokio::net::TcpListener,
    pub shutdown: ShutdownSignal,
    /// `HOSTNAME`, for the default worker id.
    pub hostname: Option<String>,
}

struct AppState {
    handle: Arc<SnapshotHandle>,
    registry: Registry,
    batcher: Batcher,
    ingest: IngestGauges,
    arc_health: Arc<ArcHealth>,
    started: Instant,
    worker_id: String,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Runs the worker until the shutdown signal, then drains for
/// `[server] shutdown_timeout` seconds.
pub async fn run(options: WorkerOptions) -> Result<(), WorkerError> {
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
    let worker_id = if config.worker.id.trim().is_empty() {
        let host = hostname
            .filter(|h| !h.trim().is_empty())
            .unwrap_or_else(|| "worker".into());
        format!("{host}-{:06x}", rand::random::<u32>() & 0xff_ffff)
    } else {
        config.worker.id.trim().to_owned()
    };
    let advertise = if config.worker.advertise_address.trim().is_empty() {
        addr.to_string()
    } else {
        config.worker.advertise_address.trim().to_owned()
    };
    let keys = StateKeys::new(&config.etcd.prefix);
    let handle = Arc::new(SnapshotHandle::default());
    let mut registry = Registry::default();
    handle.register_metrics(&mut registry);

    let lkg_path = Some(config.worker.snapshot_cache.trim())
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    let watcher = Watcher::new(
        bus.clone(),
        SnapshotBuilder::new(keys.clone(), fleet),
        handle.clone(),
        WatcherOptions {
            lkg_path,
            ..WatcherOptions::default()
        },
    );
    let watcher_task = tokio::spawn(watcher.run());
    let (stop_registration, registration_stop) = tokio::sync::watch::channel(false);
    let registration_task = tokio::spawn(registration::run(
        bus,
        keys,
        WorkerIdentity {
            worker_id: worker_id.clone(),
            address: advertise,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at_ms: now_ms(),
        },
        handle.clone(),
        Duration::from_millis(config.worker.registration_ttl_ms.max(1_000)),
        Duration::from_millis(200),
        registration_stop,
    ));

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
    let readiness_task = {
        let handle = handle.clone();
        tokio::spawn(async move {
            while !handle.is_ready() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            health_reporter
                .set_service_status("", ServingStatus::Serving)
                .await;
        })
    };
    let client = ArcClient::new(
        Duration::from_secs(config.arc.connect_timeout.max(1)),
        Duration::from_secs(config.arc.query_timeout.max(1)),
    )
    .map_err(|e| WorkerError::Startup(format!("arc client: {e}")))?;
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
    let arc_health = Arc::new(ArcHealth::default());
    let arc_health_task = tokio::spawn(arc_health.clone().run(
        client.clone(),
        handle.clone(),
        Duration::from_secs(config.arc.connect_timeout.clamp(1, 60)),
    ));
    // Rows queued for an org whose route disappeared are failed, not
    // written to an Arc the org no longer has (checked every second).
    let route_task = {
        let (batcher, handle) = (batcher.clone(), handle.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let snapshot = handle.load();
                let closed = batcher.close_orgs_without_route(|org| snapshot.route(org).is_some());
                if closed > 0 {
                    tracing::info!(
                        orgs = closed,
                        "queued writes of orgs without an arc route failed"
                    );
                }
            }
        })
    };
    let state = Arc::new(AppState {
        handle,
        registry,
        batcher: batcher.clone(),
        ingest,
        arc_health,
        started: Instant::now(),
        worker_id: worker_id.clone(),
    });
    let embedded_dir = config.worker.embedded_dir.trim();
    let embedded = if embedded_dir.is_empty() {
        None
    } else {
        let stores = EmbeddedStores::new(embedded_dir, &config.arc.measurement)
            .map_err(|e| WorkerError::Startup(format!("embedded store: {e}")))?;
        tracing::info!(
            dir = embedded_dir,
            "orgs without an arc binding use the embedded store"
        );
        Some(stores)
    };
    let api = RestState {
        snapshot: state.handle.clone(),
        limiter: Arc::new(crate::limits::RateLimiter::default()),
        stores: Arc::new(OrgStores {
            client,
            batcher: batcher.clone(),
            retry: RetryPolicy::default(),
            embedded,
        }),
        shared: Arc::new(ServiceShared::default()),
    };
    let (memories_grpc, agents_grpc, sessions_grpc) = crate::grpc::services(api.clone());
    let router = axum::Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state)
        .merge(crate::rest::router(api));
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(memtrace_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| WorkerError::Startup(format!("grpc reflection: {e}")))?;
    let routes = tonic::service::Routes::from(router)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(memories_grpc)
        .add_service(agents_grpc)
        .add_service(sessions_grpc);

    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let stop = async move {
        shutdown.await;
        tracing::info!("worker stopping: no new connections, draining in-flight requests");
        let _ = stopping_tx.send(());
    };
    tracing::info!(%addr, worker_id = %worker_id, "worker listening (/health, /ready, /metrics, /api/v1, grpc memtrace.v1, health, reflection)");
    let server = Server::builder()
        .accept_http1(true)
        .add_routes(routes)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), stop);
    tokio::pin!(server);
    let grace = Duration::from_secs(config.server.shutdown_timeout);
    // On SIGTERM: stop accepting connections and new writes at once, flush
    // what is queued to Arc without waiting for linger, and let in-flight
    // requests receive their acks, all within one grace period.
    let (served, unflushed) = tokio::select! {
        biased;
        result = &mut server => (result, batcher.close(grace).await),
        _ = stopping_rx => {
            let drain = async {
                match tokio::time::timeout(grace, &mut server).await {
                    Ok(result) => result,
                    Err(_) => {
                        tracing::warn!(grace_seconds = grace.as_secs(), "grace period expired; closing remaining requests");
                        Ok(())
                    }
                }
            };
            tokio::join!(drain, batcher.close(grace))
        }
    };
    if unflushed > 0 {
        tracing::warn!(
            unflushed,
            "memory writes not confirmed by arc before shutdown; their requests were failed"
        );
    }
    readiness_task.abort();
    arc_health_task.abort();
    route_task.abort();
    watcher_task.abort();
    // leave the fleet at once: revoke the registration's lease (bounded)
    stop_registration.send_replace(true);
    if tokio::time::timeout(Duration::from_secs(3), registration_task)
        .await
        .is_err()
    {
        tracing::warn!("worker registration did not stop in time; it lapses with its lease");
    }
    served.map_err(|e| WorkerError::Serve(e.to_string()))?;
    tracing::info!("worker stopped");
    Ok(())
}

/// Picks each request's store from the live snapshot (see the module docs).
struct OrgStores {
    client: ArcClient,
    batcher: Batcher,
    retry: RetryPolicy,
    embedded: Option<EmbeddedStores>,
}

#[async_trait::async_trait]
impl StoreResolver for OrgStores {
    async fn store(
        &self,
        snapshot: &Snapshot,
        org_id: &str,
    ) -> Result<Arc<dyn TenantStore>, ServiceError> {
        if let Some(route) = snapshot.route(org_id) {
            let store = ArcStore::new(
                org_id,
                route.clone(),
                self.batcher.clone(),
                self.client.clone(),
                self.retry,
            )?
            .with_query_timeout(snapshot.settings().write(Some(org_id)).query_timeout);
            return Ok(Arc::new(store));
        }
        match &self.embedded {
            Some(stores) => Ok(stores.open(org_id).await?),
            None => Err(ServiceError::NoArcInstance),
        }
    }
}

async fn health(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let uptime = humantime::format_duration(Duration::from_secs(state.started.elapsed().as_secs()));
    let arc = state.arc_health.per_org(&state.handle.load());
    Json(json!({
        "status": "ok",
        "service": "memtrace",
        "worker_id": state.worker_id,
        "uptime": uptime.to_string(),
        "arc": arc,
    }))
}

async fn ready(State(state): State<Arc<AppState>>) -> (StatusCode, Json<serde_json::Value>) {
    if !state.handle.is_ready() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready", "reason": "no snapshot of published state yet"})),
        );
    }
    let snapshot = state.handle.load();
    (
        StatusCode::OK,
        Json(json!({
            "status": "ready",
            "applied_revision": snapshot.applied_revision,
            "staleness_ms": state.handle.staleness_ms(),
            "orgs": snapshot.orgs.len(),
            // reported, never fatal: an unreachable Arc fails only its org
            "arc": state.arc_health.per_org(&snapshot),
        })),
    )
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    state.handle.refresh_metrics();
    state.ingest.refresh(&state.batcher.metrics());
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("metrics encoding failed: {error}"),
        ),
    }
}
