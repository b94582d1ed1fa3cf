//! Wiring: one port serving the gRPC admin API (with `grpc.health.v1` and
//! reflection) and the HTTP probes; a startup task that connects the
//! database, migrates and bootstraps; graceful shutdown with a grace period.

use crate::auth::AdminAuth;
use crate::error::ControlPlaneError;
use crate::grpc::{ApiKeyApi, ArcBindingApi, ClusterApi, Gate, MasterKeyApi, OrgApi};
use crate::http::{self, Probes};
use crate::secrets::Secrets;
use crate::startup::Startup;
use memtrace_common::bus::StateBus;
use memtrace_common::config::MemtraceConfig;
use memtrace_common::shutdown::ShutdownSignal;
use memtrace_proto::admin::v1 as pb;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

/// Everything [`serve`] needs. The listener is bound by the caller (tests bind
/// `127.0.0.1:0`), and the shutdown signal is injected.
pub struct ServeOptions {
    pub config: MemtraceConfig,
    pub secrets: Secrets,
    pub listener: tokio::net::TcpListener,
    pub shutdown: ShutdownSignal,
    /// The state bus to publish on; `None` connects the one `[etcd]` names
    /// (etcd, or the in-process bus when no endpoints are set).
    pub bus: Option<Arc<dyn StateBus>>,
}

pub(crate) const SERVICES: [&str; 7] = [
    "memtrace.admin.v1.ClusterService",
    "memtrace.admin.v1.OrgService",
    "memtrace.admin.v1.ArcBindingService",
    "memtrace.admin.v1.ApiKeyService",
    "memtrace.admin.v1.MasterKeyService",
    "memtrace.admin.v1.ConfigService",
    "memtrace.admin.v1.AuditService",
];

/// What kind of bus this process publishes on, for status output.
fn bus_kind(config: &MemtraceConfig, injected: bool) -> &'static str {
    if injected || config.etcd.endpoint_list().is_empty() {
        "in-process"
    } else {
        "etcd"
    }
}

/// Runs the control plane until the shutdown signal fires (then drains for
/// `[server] shutdown_timeout` seconds) or startup fails for good.
pub async fn serve(options: ServeOptions) -> Result<(), ControlPlaneError> {
    let ServeOptions {
        config,
        secrets,
        listener,
        shutdown,
        bus,
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
            pb::cluster_service_server::ClusterServiceServer::with_interceptor(
                ClusterApi(gate.clone(), bus_kind(&config, bus.is_some())),
                auth.clone(),
            ),
        )
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
        )
        .add_service(
            pb::config_service_server::ConfigServiceServer::with_interceptor(
                crate::grpc::ConfigApi(gate.clone()),
                auth.clone(),
            ),
        )
        .add_service(
            pb::audit_service_server::AuditServiceServer::with_interceptor(
                crate::grpc::AuditApi(gate.clone()),
                auth.clone(),
            ),
        );

    let (fatal_tx, fatal_rx) = tokio::sync::oneshot::channel::<ControlPlaneError>();
    let startup = tokio::spawn(
        Startup {
            config: config.clone(),
            secrets,
            bus,
            gate,
            auth,
            probes: probes.clone(),
            health: health_reporter,
        }
        .run(fatal_tx),
    );

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
