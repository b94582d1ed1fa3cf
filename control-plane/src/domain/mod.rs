//! The control plane's domain: orgs, Arc bindings, API keys and the master
//! key ring, behind [`ControlPlane`]. Adapters (gRPC, bootstrap) call these
//! methods with validated [`types`]; nothing here knows about the wire.

mod api_keys;
mod arc;
mod keyring;
mod orgs;
pub mod types;

pub use arc::{ArcBindingView, ArcProbe};
pub use keyring::{KekStatus, RotationReport};

use crate::store::Store;
use memtrace_common::envelope::Keyring;
use std::sync::Arc;
use std::time::Duration;

/// Purpose bound into the envelope of an Arc API key.
pub const ARC_KEY_PURPOSE: &str = "arc.api_key";

/// The control plane's domain service.
pub struct ControlPlane {
    store: Arc<dyn Store>,
    keyring: Arc<Keyring>,
    http: reqwest::Client,
}

impl ControlPlane {
    /// `arc_connect_timeout` bounds the Arc health probe.
    pub fn new(
        store: Arc<dyn Store>,
        keyring: Arc<Keyring>,
        arc_connect_timeout: Duration,
    ) -> Self {
        memtrace_common::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(arc_connect_timeout)
            .timeout(arc_connect_timeout.saturating_mul(2))
            .build()
            .unwrap_or_else(|error| {
                tracing::warn!(%error, "cannot build the arc probe client with timeouts; using defaults");
                reqwest::Client::new()
            });
        Self {
            store,
            keyring,
            http,
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }
}
