//! Wiring, in three steps: [`ControlPlaneServer::build`] assembles the
//! port's routes (the gRPC admin API, each service behind the admin guard,
//! `grpc.health.v1`, reflection and the HTTP probes) and loads the TLS pair
//! of `[control_plane] tls_cert_file` / `tls_key_file` if set (nothing runs
//! yet; a bad pair refuses the start),
//! [`ControlPlaneServer::spawn`] starts serving and the startup task, and
//! the returned [`RunningControlPlane`] stops it through one cancellation
//! token.
//!
//! Until startup finishes (database connected and migrated, first admin
//! token, state bus, settings seeded) every RPC answers UNAVAILABLE and
//! `/ready` is 503; then the server starts the reconciler, the audit chain
//! monitor, the erasure runner and the admin token refresh. A startup error is unrecoverable: the server stops and
//! [`RunningControlPlane::wait`] returns it. Shutdown: stop accepting,
//! drain in-flight calls for `[server] shutdown_timeout` seconds, stop the
//! reconciler and the refresh, close the pool.

use crate::auth::AdminAuth;
use crate::domain::audit::monitor::verify_audit_until;
use crate::domain::erasure::run_erasures_until;
use crate::domain::publish::bus::reconcile_until;
use crate::domain::refresh_admin_tokens_until;
use crate::error::ControlPlaneError;
use crate::grpc::{Gate, SERVICES, add_services};
use crate::http::{self, Probes};
use crate::secrets::Secrets;
use crate::startup::Startup;
use memtrace_common::bus::StateBus;
use memtrace_common::config::MemtraceConfig;
use memtrace_common::serve::{ServeSettings, cancel_on, serve as serve_port};
use memtrace_common::shutdown::ShutdownSignal;
use memtrace_common::tls::ServerTls;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;

/// Everything the control plane needs. The listener is bound by the caller
/// (tests bind `127.0.0.1:0`), and the shutdown signal is injected.
pub struct ServeOptions {
    pub config: MemtraceConfig,
    pub secrets: Secrets,
    pub listener: tokio::net::TcpListener,
    pub shutdown: ShutdownSignal,
    /// The state bus to publish on; `None` connects the one `[etcd]` names
    /// (etcd, or the in-process bus when no endpoints are set).
    pub bus: Option<Arc<dyn StateBus>>,
}

/// Longest the reconciler gets to stop once the server has drained.
const TASK_STOP_DEADLINE: Duration = Duration::from_secs(3);

/// Builds and runs the control plane until the shutdown signal fires (then
/// drains) or startup fails for good.
pub async fn serve(options: ServeOptions) -> Result<(), ControlPlaneError> {
    ControlPlaneServer::build(options)
        .await?
        .spawn()
        .wait()
        .await
}

/// What kind of bus this process publishes on, for status output.
fn bus_kind(config: &MemtraceConfig, injected: bool) -> &'static str {
    if injected || config.etcd.endpoint_list().is_empty() {
        "in-process"
    } else {
        "etcd"
    }
}

/// A built, not yet running control plane.
pub struct ControlPlaneServer {
    grace: Duration,
    listener: tokio::net::TcpListener,
    shutdown: ShutdownSignal,
    addr: SocketAddr,
    routes: tonic::service::Routes,
    tls: Option<ServerTls>,
    probes: Arc<Probes>,
    startup: Startup,
}

impl ControlPlaneServer {
    /// Assembles the routes and the startup task; starts nothing.
    pub async fn build(options: ServeOptions) -> Result<Self, ControlPlaneError> {
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
        let tls = config
            .control_plane
            .tls_files()
            .and_then(|files| files.map(ServerTls::load).transpose())
            .map_err(|e| ControlPlaneError::Startup(e.to_string()))?;
        let gate = Arc::new(Gate::default());
        let auth = AdminAuth::default();
        let grpc_methods = memtrace_common::reflection::method_paths(
            memtrace_proto::FILE_DESCRIPTOR_SET,
            &SERVICES,
        )
        .map_err(|e| ControlPlaneError::Startup(format!("grpc descriptors: {e}")))?;
        let probes = Arc::new(Probes::new(secrets.expected_migration, grpc_methods));
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        for service in SERVICES.iter().chain(&[""]) {
            health_reporter
                .set_service_status(*service, ServingStatus::NotServing)
                .await;
        }
        let routes =
            tonic::service::Routes::from(http::router(probes.clone())).add_service(health_service);
        let routes = add_services(routes, &gate, &auth, bus_kind(&config, bus.is_some()));
        let routes = memtrace_common::reflection::add_reflection(
            routes,
            memtrace_proto::FILE_DESCRIPTOR_SET,
            &SERVICES,
        )
        .map_err(|e| ControlPlaneError::Startup(format!("reflection service: {e}")))?;
        Ok(Self {
            grace: Duration::from_secs(config.server.shutdown_timeout),
            listener,
            shutdown,
            addr,
            routes,
            tls,
            probes: probes.clone(),
            startup: Startup {
                config,
                secrets,
                bus,
                gate,
                auth,
                probes,
                health: health_reporter,
            },
        })
    }

    /// The address the control plane serves on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts serving, the startup task and then the reconciler.
    pub fn spawn(self) -> RunningControlPlane {
        let Self {
            grace,
            listener,
            shutdown,
            addr,
            routes,
            tls,
            probes,
            startup,
        } = self;
        let stop = CancellationToken::new();
        tracing::info!(
            %addr,
            tls = tls.is_some(),
            "control plane listening (grpc admin api, /health, /ready)"
        );
        let task = {
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::spawn(cancel_on(shutdown, stop.clone()));
                let reconciler = CancellationToken::new();
                let background = tokio::spawn(start_then_reconcile(
                    startup,
                    stop.clone(),
                    reconciler.clone(),
                ));
                let settings = ServeSettings {
                    name: "control plane",
                    grace,
                    http2_keepalive: Some((Duration::from_secs(30), Duration::from_secs(10))),
                    tls,
                    metrics: probes.requests.clone(),
                };
                let served = serve_port(routes, listener, stop, settings).await;
                reconciler.cancel();
                let startup_failed = tokio::time::timeout(TASK_STOP_DEADLINE, background).await;
                if let Some(store) = probes.store.get() {
                    store.close().await;
                }
                served
                    .map_err(|e| ControlPlaneError::Startup(format!("grpc server failed: {e}")))?;
                match startup_failed {
                    Ok(Ok(Err(error))) => return Err(error),
                    Ok(Err(join)) if join.is_panic() => {
                        return Err(ControlPlaneError::Startup("startup task panicked".into()));
                    }
                    Err(_) => tracing::warn!("reconciler did not stop in time"),
                    _ => {}
                }
                tracing::info!("control plane stopped");
                Ok(())
            })
        };
        RunningControlPlane { stop, addr, task }
    }
}

/// Startup, then the reconciler and the admin token refresh until
/// `reconciler` is cancelled. A startup error stops the server (`stop`) and
/// is returned; a stop during startup abandons it.
async fn start_then_reconcile(
    startup: Startup,
    stop: CancellationToken,
    reconciler: CancellationToken,
) -> Result<(), ControlPlaneError> {
    let service = tokio::select! {
        result = startup.run() => match result {
            Ok(service) => service,
            Err(error) => {
                tracing::error!(%error, "control plane startup failed");
                stop.cancel();
                return Err(error);
            }
        },
        () = stop.cancelled() => return Ok(()),
    };
    tokio::join!(
        reconcile_until(service.clone(), reconciler.clone()),
        verify_audit_until(service.clone(), reconciler.clone()),
        run_erasures_until(service.clone(), reconciler.clone()),
        refresh_admin_tokens_until(service, reconciler)
    );
    Ok(())
}

/// A running control plane.
pub struct RunningControlPlane {
    stop: CancellationToken,
    addr: SocketAddr,
    task: JoinHandle<Result<(), ControlPlaneError>>,
}

impl RunningControlPlane {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Cancelling it starts the shutdown, as the injected signal does.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Waits until the control plane has stopped; a startup failure is
    /// returned as its error.
    pub async fn wait(self) -> Result<(), ControlPlaneError> {
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(ControlPlaneError::Startup(format!(
                "control plane task failed: {e}"
            ))),
        }
    }

    /// Starts the shutdown and waits for it.
    pub async fn shutdown(self) -> Result<(), ControlPlaneError> {
        self.stop.cancel();
        self.wait().await
    }
}
