//! Wiring: one port serving the gRPC admin API (with `grpc.health.v1` and
//! reflection) and the HTTP probes; a startup task that connects the
//! database, migrates and bootstraps; graceful shutdown with a grace period.

use crate::auth::AdminAuth;
use crate::bootstrap;
use crate::domain::ControlPlane;
use crate::error::ControlPlaneError;
use crate::grpc::{ApiKeyApi, ArcBindingApi, Gate, MasterKeyApi, OrgApi};
use crate::http::{self, Probes};
use crate::secrets::Secrets;
use crate::store::{SqlStore, Store, sql_redact_url};
use memtrace_common::config::MemtraceConfig;
use memtrace_common::shutdown::ShutdownSignal;
use memtrace_proto::admin::v1 as pb;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// Everything [`serve`] needs. The listener is bound by the caller (tests bind
/// `127.0.0.1:0`), and the shutdown signal is injected.
pub struct ServeOptions {
    pub config: MemtraceConfig,
    pub secrets: Secrets,
    pub listener: tokio::net::TcpListener,
    pub shutdown: ShutdownSignal,
}

const SERVICES: [&str; 4] = [
    "memtrace.admin.v1.OrgService",
    "memtrace.admin.v1.ArcBindingService",
    "memtrace.admin.v1.ApiKeyService",
    "memtrace.admin.v1.MasterKeyService",
];

/// Runs the control plane until the shutdown signal fires (then drains for
/// `[server] shutdown_timeout` seconds) or startup fails for good.
pub async fn serve(options: ServeOptions) -> Result<(), ControlPlaneError> {
    let ServeOptions {
        config,
        secrets,
        listener,
        shutdown,
    } = options;
    let addr = listener
        .local_addr()
        .map_err(|e| ControlPlaneError::Startup(format!("listener has no address: {e}")))?;
    let gate = Arc::new(Gate::default());
    let auth = AdminAuth::default();
    let probes = Arc::new(Probes::new(secrets.expected_migration));
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    for service in SERVICES.iter().chain(&[""]) {
        health_reporter
            .set_service_status(*service, ServingStatus::NotServing)
            .await;
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(memtrace_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ControlPlaneError::Startup(format!("reflection service: {e}")))?;

    let routes = tonic::service::Routes::from(http::router(probes.clone()))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(pb::org_service_server::OrgServiceServer::with_interceptor(
            OrgApi(gate.clone()),
            auth.clone(),
        ))
        .add_service(
            pb::arc_binding_service_server::ArcBindingServiceServer::with_interceptor(
                ArcBindingApi(gate.clone()),
                auth.clone(),
            ),
        )
        .add_service(
            pb::api_key_service_server::ApiKeyServiceServer::with_interceptor(
                ApiKeyApi(gate.clone()),
                auth.clone(),
            ),
        )
        .add_service(
            pb::master_key_service_server::MasterKeyServiceServer::with_interceptor(
                MasterKeyApi(gate.clone()),
                auth.clone(),
            ),
        );

    let (fatal_tx, fatal_rx) = tokio::sync::oneshot::channel::<ControlPlaneError>();
    let startup = tokio::spawn(startup(
        config.clone(),
        secrets,
        gate,
        auth,
        probes.clone(),
        health_reporter,
        fatal_tx,
    ));

    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let (fatal_seen_tx, mut fatal_seen_rx) = tokio::sync::oneshot::channel::<ControlPlaneError>();
    let stop = async move {
        let fatal = async {
            match fatal_rx.await {
                Ok(error) => error,
                // startup finished without error: only the signal stops us
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown => {}
            error = fatal => {
                let _ = fatal_seen_tx.send(error);
            }
        }
        tracing::info!("control plane stopping: no new connections, draining in-flight calls");
        let _ = stopping_tx.send(());
    };
    tracing::info!(%addr, "control plane listening (grpc admin api, /health, /ready)");
    let server = Server::builder()
        .accept_http1(true)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_routes(routes)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), stop);
    tokio::pin!(server);
    let grace = Duration::from_secs(config.server.shutdown_timeout);
    let served = tokio::select! {
        biased;
        result = &mut server => result,
        _ = stopping_rx => match tokio::time::timeout(grace, &mut server).await {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!(grace_seconds = grace.as_secs(), "grace period expired; closing remaining calls");
                Ok(())
            }
        },
    };
    startup.abort();
    if let Some(store) = probes.store.get() {
        store.close().await;
    }
    served.map_err(|e| ControlPlaneError::Startup(format!("grpc server failed: {e}")))?;
    if let Ok(error) = fatal_seen_rx.try_recv() {
        return Err(error);
    }
    tracing::info!("control plane stopped");
    Ok(())
}

/// Connects (retrying while the database is unreachable), migrates, runs the
/// first-start duties, then opens the gate. Unrecoverable errors are sent to
/// `fatal` so the process exits non-zero instead of idling unready forever.
async fn startup(
    config: MemtraceConfig,
    secrets: Secrets,
    gate: Arc<Gate>,
    auth: AdminAuth,
    probes: Arc<Probes>,
    health: HealthReporter,
    fatal: tokio::sync::oneshot::Sender<ControlPlaneError>,
) {
    if let Err(error) = try_startup(config, secrets, gate, auth, probes, health).await {
        tracing::error!(%error, "control plane startup failed");
        let _ = fatal.send(error);
    }
}

async fn try_startup(
    config: MemtraceConfig,
    secrets: Secrets,
    gate: Arc<Gate>,
    auth: AdminAuth,
    probes: Arc<Probes>,
    health: HealthReporter,
) -> Result<(), ControlPlaneError> {
    let url = match &secrets.database_url {
        Some(url) => url.to_string(),
        None => SqlStore::sqlite_url(&config.auth.db_path),
    };
    let shown = sql_redact_url(&url);
    let mut delay = Duration::from_millis(200);
    let store = loop {
        match SqlStore::connect(&url).await {
            Ok(store) => break store,
            Err(crate::store::StoreError::UnsupportedUrl(u)) => {
                return Err(ControlPlaneError::Startup(format!(
                    "MEMTRACE_DATABASE_URL {u:?} is not supported: use postgres://… or sqlite://PATH"
                )));
            }
            Err(error) => {
                tracing::warn!(database = %shown, %error, retry_in_ms = delay.as_millis() as u64, "database unreachable; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    };
    store.migrate().await.map_err(|e| {
        ControlPlaneError::Startup(format!("database migration failed on {shown}: {e}"))
    })?;
    tracing::info!(database = %shown, backend = ?store.backend(), migration = store.latest_known_migration(), "database ready");
    let store = Arc::new(store);
    if let Some(token) =
        bootstrap::ensure_admin_token(store.as_ref(), secrets.bootstrap_admin_token.as_ref())
            .await?
    {
        bootstrap::announce_admin_token(&token);
    }
    let hashes = store.admin_token_hashes().await?;
    auth.replace(
        hashes
            .iter()
            .filter_map(|row| <[u8; 32]>::try_from(row.token_hash.as_slice()).ok()),
    );

    let service = Arc::new(ControlPlane::new(
        store.clone(),
        Arc::new(secrets.keyring),
        Duration::from_secs(config.arc.connect_timeout.max(1)),
    ));
    bootstrap::migrate_legacy_arc(&service, &config.arc).await?;
    gate.open(service);
    let _ = probes.store.set(store);
    for name in SERVICES.iter().chain(&[""]) {
        health
            .set_service_status(*name, ServingStatus::Serving)
            .await;
    }
    tracing::info!("control plane ready");
    Ok(())
}
