//! The control plane's domain: orgs, Arc bindings, API keys, admin tokens,
//! the master key ring, erasure jobs and the key that signs erasure receipts, behind [`ControlPlane`]. Adapters (gRPC, bootstrap) call these
//! methods with validated [`types`]; nothing here knows about the wire.

pub mod admin_tokens;
mod api_keys;
mod arc;
pub mod audit;
mod cluster;
pub mod config;
pub mod erasure;
mod keyring;
pub mod legacy_keys;
mod orgs;
pub mod publish;
pub mod receipts;
pub mod signing_keys;
pub mod tokens;
pub mod types;

pub use admin_tokens::{ADMIN_TOKEN_RELOAD_INTERVAL, refresh_admin_tokens_until};
pub use arc::{ArcBindingView, ArcProbe};
pub use audit::{AuditOutcome, VerifyReport};
pub use cluster::{ClusterStatus, WorkerStatus};
pub use config::{SettingUpdate, SettingView};
pub use keyring::{KekStatus, RotationReport};
pub use publish::ReconcileReport;
pub use publish::{Published, Publisher};
pub use receipts::{RECEIPT_KEY_PURPOSE, ReceiptSigner};

use crate::auth::AdminAuth;
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
    publisher: Arc<Publisher>,
    http: reqwest::Client,
    config_policy: config::ConfigPolicy,
    /// The admin tokens the guard checks; see [`ControlPlane::with_admin_auth`].
    admin_auth: AdminAuth,
    /// The last audit chain walk, exported on `/metrics`.
    audit_metrics: audit::monitor::AuditMetrics,
    /// Erasure jobs' settings, receipt signer and metrics; see
    /// [`ControlPlane::with_erasure`].
    erasure: Arc<erasure::ErasureRuntime>,
}

impl ControlPlane {
    /// `arc_connect_timeout` bounds the Arc health probe.
    pub fn new(
        store: Arc<dyn Store>,
        keyring: Arc<Keyring>,
        publisher: Arc<Publisher>,
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
            publisher,
            http,
            config_policy: config::ConfigPolicy::default(),
            admin_auth: AdminAuth::default(),
            audit_metrics: audit::monitor::AuditMetrics::default(),
            erasure: Arc::new(erasure::ErasureRuntime::default()),
        }
    }

    /// Records audit chain walks into `metrics` (registered on `/metrics`).
    pub fn with_audit_metrics(mut self, metrics: audit::monitor::AuditMetrics) -> Self {
        self.audit_metrics = metrics;
        self
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The keys that sign agent tokens, over this control plane's database
    /// and master keys.
    pub fn token_keys(&self) -> signing_keys::SigningKeys {
        signing_keys::SigningKeys::new(
            self.store.clone(),
            self.keyring.clone(),
            crate::store::KeyFamily::Token,
        )
    }

    /// The signer of erasure receipts, over this control plane's database
    /// and master keys.
    pub fn receipt_signer(&self) -> ReceiptSigner {
        ReceiptSigner::new(self.store.clone(), self.keyring.clone())
    }
}
