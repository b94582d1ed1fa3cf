//! Startup of the control plane, after the port is bound: connect the
//! database (retrying while it is unreachable), migrate, register the first
//! admin token (or the bootstrap one whenever no admin token is active) and
//! load the admin tokens, connect the state bus, seed runtime settings,
//! migrate legacy `[arc]` settings, create the first erasure receipt
//! signing key if there is none, open the gate. The server then starts
//! the reconciler, the erasure runner and the admin token refresh.

use crate::auth::AdminAuth;
use crate::bootstrap;
use crate::domain::ReceiptSigner;
use crate::domain::erasure::{ErasureRuntime, ErasureSettings};
use crate::domain::publish::bus::connect_bus;
use crate::domain::{ControlPlane, Publisher};
use crate::error::ControlPlaneError;
use crate::grpc::Gate;
use crate::grpc::SERVICES;
use crate::http::Probes;
use crate::secrets::Secrets;
use crate::store::{SqlStore, Store, sql_redact_url};
use memtrace_common::backoff::Backoff;
use memtrace_common::bus::StateBus;
use memtrace_common::config::MemtraceConfig;
use memtrace_common::state::StateKeys;
use std::sync::Arc;
use std::time::Duration;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// Connects (retrying while the database is unreachable), migrates, runs the
/// first-start duties, then opens the gate. An error is unrecoverable: the
/// process exits non-zero instead of idling unready forever.
pub(crate) struct Startup {
    pub config: MemtraceConfig,
    pub secrets: Secrets,
    pub bus: Option<Arc<dyn StateBus>>,
    pub gate: Arc<Gate>,
    pub auth: AdminAuth,
    pub probes: Arc<Probes>,
    pub health: HealthReporter,
}

impl Startup {
    /// Runs every step; the ready service on success.
    pub(crate) async fn run(self) -> Result<Arc<ControlPlane>, ControlPlaneError> {
        let Startup {
            config,
            secrets,
            bus,
            gate,
            auth,
            probes,
            health,
        } = self;
        let url = match &secrets.database_url {
            Some(url) => url.to_string(),
            None => SqlStore::sqlite_url(&config.auth.db_path),
        };
        let shown = sql_redact_url(&url);
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        let store = loop {
            match SqlStore::connect(&url).await {
                Ok(store) => break store,
                Err(crate::store::StoreError::UnsupportedUrl(u)) => {
                    return Err(ControlPlaneError::Startup(format!(
                        "MEMTRACE_DATABASE_URL {u:?} is not supported: use postgres://… or sqlite://PATH"
                    )));
                }
                Err(error) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(database = %shown, %error, retry_in_ms = delay.as_millis() as u64, "database unreachable; retrying");
                    tokio::time::sleep(delay).await;
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
        auth.load(&store.list_admin_tokens().await?);

        let bus = match bus {
            Some(bus) => bus,
            None => connect_bus(&config.etcd).await?,
        };
        let fleet = match secrets.fleet {
            Some(fleet) => fleet,
            None if config.etcd.endpoint_list().is_empty() => {
                memtrace_common::fleet::ephemeral_keyring()
            }
            None => {
                return Err(ControlPlaneError::Startup(format!(
                    "{} is required when [etcd] endpoints is set (workers open the Arc keys with it)",
                    memtrace_common::fleet::FLEET_KEY_VAR
                )));
            }
        };
        let publisher = Arc::new(
            Publisher::new(bus, StateKeys::new(&config.etcd.prefix), Arc::new(fleet))
                .with_metrics(probes.publish.clone()),
        );
        let keyring = Arc::new(secrets.keyring);
        let service = Arc::new(
            ControlPlane::new(
                store.clone(),
                keyring.clone(),
                publisher,
                Duration::from_secs(config.arc.connect_timeout.max(1)),
            )
            .with_admin_auth(auth)
            .with_audit_metrics(probes.audit.clone())
            // the one place the erasure receipt signer is wired
            .with_erasure(ErasureRuntime::new(
                ErasureSettings::from_config(&config),
                Arc::new(ReceiptSigner::new(store.clone(), keyring)),
                probes.erasure.clone(),
            )),
        );
        bootstrap::migrate_legacy_arc(&service, &config.arc).await?;
        service.seed_settings(&config).await?;
        let receipt_key = service.receipt_signer().ensure_key().await?;
        tracing::info!(key_id = %receipt_key.key_id, fingerprint = %receipt_key.fingerprint, "erasure receipt signing key");
        // published by the first reconciliation pass
        let token_key = service.token_keys().ensure_key().await?;
        tracing::info!(key_id = %token_key.key_id, fingerprint = %token_key.fingerprint, "agent token signing key");
        gate.open(service.clone());
        let _ = probes.store.set(store);
        for name in SERVICES.iter().chain(&[""]) {
            health
                .set_service_status(*name, ServingStatus::Serving)
                .await;
        }
        tracing::info!("control plane ready");
        Ok(service)
    }
}
