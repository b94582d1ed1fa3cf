//! Thin tonic adapters for `memtrace.admin.v1`: take the request, validate it
//! into domain types, call [`ControlPlane`], convert the result. No logic.

mod api_keys;
mod arc;
mod keyring;
mod orgs;

pub use api_keys::ApiKeyApi;
pub use arc::ArcBindingApi;
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
