//! First-start duties: the initial admin token and the migration of the
//! original's single-instance `[arc]` settings into `org_default`.

use crate::auth::AdminActor;
use crate::domain::ControlPlane;
use crate::domain::types::{AdminRole, ArcSpec, OrgId, OrgName};
use crate::error::{ControlPlaneError, Result};
use crate::store::{AdminTokenRow, Store, StoreError};
use memtrace_common::config::ArcConfig;
use memtrace_common::credentials::{
    credential_fingerprint, generate_admin_token, identify_admin_token,
};
use zeroize::Zeroizing;

/// The id the original memtrace gives its first org.
pub const DEFAULT_ORG_ID: &str = "org_default";

/// Makes sure an active admin-role token exists. Returns the token when this
/// call generated it (the caller prints it once); `None` otherwise.
///
/// When none is active (first start, or every admin token was revoked with
/// `--force` or has expired), the bootstrap token is registered, or one is
/// generated: restarting with a new `MEMTRACE_BOOTSTRAP_ADMIN_TOKEN` is how
/// operators get back in. A bootstrap token that was revoked is never
/// registered again.
pub async fn ensure_admin_token(
    store: &dyn Store,
    bootstrap: Option<&Zeroizing<String>>,
) -> Result<Option<Zeroizing<String>>> {
    let now = memtrace_common::clock::now_ms();
    if store.active_admin_count(now).await? > 0 {
        if bootstrap.is_some() {
            tracing::info!("bootstrap admin token ignored: an active admin token exists");
        }
        return Ok(None);
    }
    let (token, generated) = match bootstrap {
        Some(token) => (token.clone(), false),
        None => (generate_admin_token(), true),
    };
    let presented = identify_admin_token(&token).map_err(|e| {
        ControlPlaneError::Startup(format!("MEMTRACE_BOOTSTRAP_ADMIN_TOKEN is not usable: {e}"))
    })?;
    let row = AdminTokenRow {
        id: presented.token_id,
        token_hash: presented.hash.to_vec(),
        fingerprint: credential_fingerprint(&token),
        name: if generated { "generated" } else { "bootstrap" }.to_owned(),
        role: AdminRole::Admin.as_str().to_owned(),
        created_at: now,
        expires_at: None,
        last_used_at: None,
        revoked_at: None,
    };
    // no admin made this one: no audit entry
    match store.insert_admin_token(&row, None).await {
        Ok(()) => {
            tracing::info!(token_id = %row.id, fingerprint = %row.fingerprint, source = %row.name, "admin token registered");
            Ok(generated.then_some(token))
        }
        // another replica registered the same bootstrap token first, or it
        // was registered before and has since been revoked
        Err(StoreError::Conflict(_)) => {
            if let Some(stored) = store.get_admin_token(&row.id).await?
                && stored.revoked_at.is_some()
            {
                tracing::warn!(token_id = %row.id, "MEMTRACE_BOOTSTRAP_ADMIN_TOKEN was revoked and is not registered again; set a different one to regain admin access");
            }
            Ok(None)
        }
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
