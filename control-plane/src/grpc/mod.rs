//! Thin tonic adapters for `memtrace.admin.v1`: take the request, validate it
//! into domain types, call [`ControlPlane`], convert the result. No logic.
//! Every service is served behind [`AdminGuard`] (authentication and the
//! role table of [`roles`]).

mod admin_tokens;
mod api_keys;
mod arc;
mod audit;
mod cluster;
mod config;
mod erasures;
mod guard;
mod keyring;
mod orgs;
pub mod roles;

pub use admin_tokens::AdminTokenApi;
pub use api_keys::ApiKeyApi;
pub use arc::ArcBindingApi;
pub use audit::AuditApi;
pub use cluster::ClusterApi;
pub use config::ConfigApi;
pub use erasures::ErasureApi;
pub use guard::AdminGuard;
pub use keyring::MasterKeyApi;
pub use orgs::OrgApi;

use crate::auth::AdminAuth;
use crate::domain::ControlPlane;
use memtrace_proto::admin::v1 as pb;
use std::sync::{Arc, OnceLock};
use tonic::Status;
use tonic::server::NamedService;
use tonic::service::Routes;

/// The admin services, by their gRPC names (for `grpc.health.v1`).
pub const SERVICES: [&str; 9] = [
    <pb::cluster_service_server::ClusterServiceServer<ClusterApi> as NamedService>::NAME,
    <pb::org_service_server::OrgServiceServer<OrgApi> as NamedService>::NAME,
    <pb::arc_binding_service_server::ArcBindingServiceServer<ArcBindingApi> as NamedService>::NAME,
    <pb::api_key_service_server::ApiKeyServiceServer<ApiKeyApi> as NamedService>::NAME,
    <pb::admin_token_service_server::AdminTokenServiceServer<AdminTokenApi> as NamedService>::NAME,
    <pb::master_key_service_server::MasterKeyServiceServer<MasterKeyApi> as NamedService>::NAME,
    <pb::config_service_server::ConfigServiceServer<ConfigApi> as NamedService>::NAME,
    <pb::audit_service_server::AuditServiceServer<AuditApi> as NamedService>::NAME,
    <pb::erasure_service_server::ErasureServiceServer<ErasureApi> as NamedService>::NAME,
];

/// Adds every admin service, each behind the [`AdminGuard`], to `routes`.
/// `bus_kind` is what `status` reports the bus as.
pub fn add_services(
    routes: Routes,
    gate: &Arc<Gate>,
    auth: &AdminAuth,
    bus_kind: &'static str,
) -> Routes {
    routes
        .add_service(AdminGuard::new(
            pb::org_service_server::OrgServiceServer::new(OrgApi(gate.clone())),
            gate.clone(),
            auth.clone(),
        ))
        .add_service(AdminGuard::new(
            pb::cluster_service_server::ClusterServiceServer::new(ClusterApi(
                gate.clone(),
                bus_kind,
            )),
            gate.clone(),
            auth.clone(),
        ))
        .add_service(AdminGuard::new(
            pb::arc_binding_service_server::ArcBindingServiceServer::new(ArcBindingApi(
                gate.clone(),
            )),
            gate.clone(),
            auth.clone(),
        ))
        .add_service(AdminGuard::new(
            pb::api_key_service_server::ApiKeyServiceServer::new(ApiKeyApi(gate.clone())),
            gate.clone(),
            auth.clone(),
        ))
        .add_service(AdminGuard::new(
            pb::admin_token_service_server::AdminTokenServiceServer::new(AdminTokenApi(
                gate.clone(),
            )),
            gate.clone(),
            auth.clone(),
        ))
        .add_service(AdminGuard::new(
            pb::master_key_service_server::MasterKeyServiceServer::new(MasterKeyApi(gate.clone())),
            gate.clone(),
            auth.clone(),
        ))
        .add_service(AdminGuard::new(
            pb::config_service_server::ConfigServiceServer::new(ConfigApi(gate.clone())),
            gate.clone(),
            auth.clone(),
        ))
        .add_service(AdminGuard::new(
            pb::audit_service_server::AuditServiceServer::new(AuditApi(gate.clone())),
            gate.clone(),
            auth.clone(),
        ))
        .add_service(AdminGuard::new(
            pb::erasure_service_server::ErasureServiceServer::new(ErasureApi(gate.clone())),
            gate.clone(),
            auth.clone(),
        ))
}

/// Holds the domain service once startup (database, migrations) finished;
/// until then every RPC answers UNAVAILABLE.
#[derive(Debug, Default)]
pub struct Gate {
    service: OnceLock<Arc<ControlPlane>>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane").finish_non_exhaustive()
    }
}

/// Response metadata carrying the state-bus revision a change was published
/// at (absent when publication was deferred to the reconciler).
pub const REVISION_HEADER: &str = "x-memtrace-revision";

/// Wraps `message`, adding the revision metadata when there is one.
pub(crate) fn with_revision<T>(message: T, revision: Option<i64>) -> tonic::Response<T> {
    let mut response = tonic::Response::new(message);
    if let Some(value) = revision.and_then(|r| r.to_string().parse().ok()) {
        response.metadata_mut().insert(REVISION_HEADER, value);
    }
    response
}

impl Gate {
    pub fn open(&self, service: Arc<ControlPlane>) {
        let _ = self.service.set(service);
    }

    pub fn service(&self) -> Result<&Arc<ControlPlane>, Status> {
        self.service.get().ok_or_else(|| {
            Status::unavailable("control plane is starting: database not ready yet, retry shortly")
        })
    }
}

/// The admin the admin guard identified (a fingerprint, never the
/// token); `unknown` if a request somehow arrives without one.
pub(crate) fn actor<T>(request: &tonic::Request<T>) -> crate::auth::AdminActor {
    request
        .extensions()
        .get::<crate::auth::AdminActor>()
        .cloned()
        .unwrap_or_else(|| crate::auth::AdminActor {
            fingerprint: "unknown".to_owned(),
        })
}
