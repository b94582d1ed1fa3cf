//! Thin tonic adapters for `memtrace.admin.v1`: take the request, validate it
//! into domain types, call [`ControlPlane`], convert the result. No logic.

mod api_keys;
mod arc;
mod audit;
mod cluster;
mod config;
mod keyring;
mod orgs;

pub use api_keys::ApiKeyApi;
pub use arc::ArcBindingApi;
pub use audit::AuditApi;
pub use cluster::ClusterApi;
pub use config::ConfigApi;
pub use keyring::MasterKeyApi;
pub use orgs::OrgApi;

use crate::domain::ControlPlane;
use std::sync::{Arc, OnceLock};
use tonic::Status;

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

/// The admin the auth interceptor identified (a fingerprint, never the
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
