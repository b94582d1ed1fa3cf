//! First-start duties: the initial admin token and the migration of the
//! original's single-instance `[arc]` settings into `org_default`.

use crate::auth::AdminActor;
use crate::domain::ControlPlane;
use crate::domain::types::{ArcSpec, OrgId, OrgName};
use crate::error::{ControlPlaneError, Result};
use crate::store::{AdminTokenRow, Store, StoreError};
use memtrace_common::config::ArcConfig;
use memtrace_common::credentials::{
    credential_fingerprint, generate_admin_token, hash_admin_token,
};
use zeroize::Zeroizing;

/// The id the original memtrace gives its first org.
pub const DEFAULT_ORG_ID: &str = "org_default";

/// Makes sure at least one admin token exists. Returns the token when this
/// call generated it (the caller prints it once); `None` otherwise.
pub async fn ensure_admin_token(
    store: &dyn Store,
    bootstrap: Option<&Zeroizing<String>>,
) -> Result<Option<Zeroizing<String>>> {
    if store.admin_token_count().await? > 0 {
        if bootstrap.is_some() {
            tracing::info!("bootstrap admin token ignored: admin tokens already exist");
        }
        return Ok(None);
    }
    let (token, generated) = match bootstrap {
        Some(token) => (token.clone(), false),
        None => (generate_admin_token(), true),
    };
    let row = AdminTokenRow {
        token_hash: hash_admin_token(&token).to_vec(),
        fingerprint: credential_fingerprint(&token),
        label: if generated { "generated" } else { "bootstrap" }.to_owned(),
        created_at: memtrace_common::clock::now_ms(),
    };
    match store.insert_admin_token(&row).await {
        Ok(()) => {
            tracing::info!(fingerprint = %row.fingerprint, source = %row.label, "admin token registered");
            Ok(generated.then_some(token))
        }
        // another replica registered the same bootstrap token first
        Err(StoreError::Conflict(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Prints a generated admin token once, on stdout, outside the log stream.
pub fn announce_admin_token(token: &str) {
    println!(
        "\n=====================================================================\n\
         FIRST START: generated admin token (shown once, save it now):\n\n    {token}\n\n\
         use it with: export MEMTRACE_ADMIN_TOKEN=<token>\n\
         =====================================================================\n"
    );
}

/// Migrates legacy `[arc] url/api_key/database/measurement` into
/// `org_default`, once: only while no Arc binding exists at all.
pub async fn migrate_legacy_arc(cp: &ControlPlane, arc: &ArcConfig) -> Result<bool> {
    if arc.url.trim().is_empty() {
        return Ok(false);
    }
    if !cp.store().list_arc_bindings().await?.is_empty() {
        tracing::debug!("legacy [arc] settings present but bindings exist; nothing to migrate");
        return Ok(false);
    }
    let database = if arc.database.trim().is_empty() {
        "default"
    } else {
        arc.database.as_str()
    };
    let spec = ArcSpec::parse(&arc.url, database, &arc.measurement, &arc.api_key).map_err(|e| {
        ControlPlaneError::Startup(format!("legacy [arc] settings cannot be migrated: {e}"))
    })?;
    let org = OrgId::parse(DEFAULT_ORG_ID)?;
    match cp.get_org(&org).await {
        Ok(_) => {}
        Err(ControlPlaneError::OrgNotFound(_)) => {
            let name = OrgName::parse("default")?;
            match cp
                .create_org_with_id(&AdminActor::system(), DEFAULT_ORG_ID, &name)
                .await
            {
                Ok(_) | Err(ControlPlaneError::AlreadyExists(_)) => {}
                Err(e) => return Err(e),
            }
            // the name may be taken by another org; fall back to the id as name
            if cp.get_org(&org).await.is_err() {
                cp.create_org_with_id(
                    &AdminActor::system(),
                    DEFAULT_ORG_ID,
                    &OrgName::parse(DEFAULT_ORG_ID)?,
                )
                .await?;
            }
        }
        Err(e) => return Err(e),
    }
    match cp.bind_arc(&AdminActor::system(), &org, spec, false).await {
        Ok(view) => {
            tracing::warn!(
                org_id = DEFAULT_ORG_ID,
                arc_id = %view.value.row.id,
                url = %view.value.row.url,
                "migrated legacy [arc] settings into org_default; manage bindings with 'memtracectl org add-arc' and remove [arc] url/api_key from the config"
            );
            Ok(true)
        }
        // a concurrent replica migrated first
        Err(ControlPlaneError::AlreadyExists(_)) => Ok(false),
        Err(e) => Err(e),
    }
}
