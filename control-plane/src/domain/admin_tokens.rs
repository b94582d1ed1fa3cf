//! Admin tokens: generated here and shown once, stored as hashes, listed
//! without secrets, revoked by id; the in-memory table the guard checks
//! ([`AdminAuth`]) follows every change made here at once and the database
//! every [`ADMIN_TOKEN_RELOAD_INTERVAL`] (changes made by other replicas).
//! Refused calls of known tokens are audited from here too.

use super::ControlPlane;
use super::audit::{AuditOutcome, audit_record};
use super::types::{AdminRole, AdminTokenId, AdminTokenSpec};
use crate::auth::{AdminActor, AdminAuth, AdminCaller, KnownRefusal};
use crate::clock::duration_ms;
use crate::error::{ControlPlaneError, Result};
use crate::store::{AdminTokenRevocation, AdminTokenRow, AuditWith};
use memtrace_common::clock::now_ms;
use memtrace_common::credentials::{credential_fingerprint, new_admin_token};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

/// How often every replica reloads the admin tokens from the database: the
/// longest a token created or revoked on another replica takes to work or to
/// be refused here (plus one database read). On the replica that made the
/// change it takes effect at once. `last_used_at` is written at the same
/// pace.
pub const ADMIN_TOKEN_RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// A reload that lost to local changes this many times in a row waits for
/// the next interval.
const RELOAD_ATTEMPTS: usize = 3;

impl ControlPlane {
    /// Shares `auth` (the table the admin API's guard checks) with the
    /// domain, so the changes made here reach it at once.
    pub fn with_admin_auth(mut self, auth: AdminAuth) -> Self {
        self.admin_auth = auth;
        self
    }

    /// Creates a token; the returned secret exists nowhere else.
    pub async fn create_admin_token(
        &self,
        actor: &AdminActor,
        spec: &AdminTokenSpec,
    ) -> Result<(AdminTokenRow, Zeroizing<String>)> {
        let token = new_admin_token();
        let now = now_ms();
        let row = AdminTokenRow {
            id: token.token_id.clone(),
            token_hash: token.hash.to_vec(),
            fingerprint: credential_fingerprint(&token.token),
            name: spec.name.clone(),
            role: spec.role.as_str().to_owned(),
            created_at: now,
            expires_at: spec.expires_in.map(|d| now.saturating_add(duration_ms(d))),
            last_used_at: None,
            revoked_at: None,
        };
        let audit = |row: &AdminTokenRow| {
            let details =
                json!({"name": row.name, "role": row.role, "expires_at_ms": row.expires_at});
            audit_record(
                actor,
                "admin_token.create",
                &row.id,
                AuditOutcome::Ok,
                details,
            )
        };
        let key = self.audit_key();
        self.store
            .insert_admin_token(&row, Some(AuditWith::new(&key, &audit)))
            .await?;
        self.admin_auth.apply(&row);
        tracing::info!(token_id = %row.id, role = %row.role, fingerprint = %row.fingerprint, "admin token created");
        Ok((row, token.token))
    }

    /// Every token, oldest first; revoked ones only when asked.
    pub async fn list_admin_tokens(&self, include_revoked: bool) -> Result<Vec<AdminTokenRow>> {
        let mut rows = self.store.list_admin_tokens().await?;
        if !include_revoked {
            rows.retain(|row| row.revoked_at.is_none());
        }
        Ok(rows)
    }

    /// Revokes a token; it is refused by the next call on this replica.
    /// The last active admin-role token is kept unless `force` is set (an
    /// operator would otherwise lock everyone out of every change); the
    /// refusal is audited. Revoking a revoked token changes nothing.
    pub async fn revoke_admin_token(
        &self,
        actor: &AdminActor,
        id: &AdminTokenId,
        force: bool,
    ) -> Result<AdminTokenRow> {
        let audit = |row: &AdminTokenRow| {
            let details = json!({"name": row.name, "role": row.role, "forced": force});
            audit_record(
                actor,
                "admin_token.revoke",
                &row.id,
                AuditOutcome::Ok,
                details,
            )
        };
        let key = self.audit_key();
        match self
            .store
            .revoke_admin_token(id.as_str(), now_ms(), force, AuditWith::new(&key, &audit))
            .await?
        {
            AdminTokenRevocation::NotFound => Err(ControlPlaneError::AdminTokenNotFound(
                id.as_str().to_owned(),
            )),
            AdminTokenRevocation::LastAdmin(row) => {
                self.audit_quietly(
                    actor,
                    "admin_token.revoke",
                    &row.id,
                    AuditOutcome::Denied,
                    json!({"name": row.name, "role": row.role, "reason": "last active admin-role token"}),
                )
                .await;
                Err(ControlPlaneError::LastAdminToken(row.id))
            }
            AdminTokenRevocation::AlreadyRevoked(row) => {
                self.admin_auth.apply(&row);
                Ok(row)
            }
            AdminTokenRevocation::Revoked(row) => {
                self.admin_auth.apply(&row);
                tracing::info!(token_id = %row.id, role = %row.role, forced = force, "admin token revoked");
                Ok(row)
            }
        }
    }

    /// Audits a call refused because the caller's role is too low.
    pub async fn audit_denied_call(
        &self,
        actor: &AdminActor,
        caller: &AdminCaller,
        method: &str,
        required: AdminRole,
    ) {
        self.audit_quietly(
            actor,
            "admin.call",
            method,
            AuditOutcome::Denied,
            json!({"caller": caller.token_id, "role": caller.role.as_str(), "required_role": required.as_str()}),
        )
        .await;
    }

    /// Audits a call made with a real token that is revoked or expired.
    pub async fn audit_refused_token(
        &self,
        actor: &AdminActor,
        known: &KnownRefusal,
        method: &str,
    ) {
        self.audit_quietly(
            actor,
            "admin_token.use",
            &known.token_id,
            AuditOutcome::Denied,
            json!({"reason": known.reason, "method": method}),
        )
        .await;
    }

    /// Appends an entry for a refusal, which is answered whether or not the
    /// entry could be written (a failure is logged).
    async fn audit_quietly(
        &self,
        actor: &AdminActor,
        action: &str,
        target: &str,
        outcome: AuditOutcome,
        details: serde_json::Value,
    ) {
        if let Err(error) = self
            .record_audit(actor, action, target, outcome, details)
            .await
        {
            tracing::error!(%error, action, target, "audit entry for a refused call could not be appended");
        }
    }

    /// Reads the tokens from the database into the guard's table, unless a
    /// change made here raced the read (then it reads again).
    pub async fn reload_admin_tokens(&self) -> Result<()> {
        for _ in 0..RELOAD_ATTEMPTS {
            let mark = self.admin_auth.mark();
            let rows = self.store.list_admin_tokens().await?;
            if self.admin_auth.reload(&rows, mark) {
                return Ok(());
            }
        }
        tracing::debug!(
            "admin tokens changed here during every reload; reading again next interval"
        );
        Ok(())
    }

    /// Writes when tokens were last used (best effort: the times are
    /// informational, a failure is logged and they are dropped).
    pub async fn flush_admin_token_use(&self) {
        let used = self.admin_auth.take_used();
        if let Err(error) = self.store.touch_admin_tokens(&used).await {
            tracing::warn!(%error, tokens = used.len(), "could not record when admin tokens were last used");
        }
    }
}

/// Every [`ADMIN_TOKEN_RELOAD_INTERVAL`] until `stop`: records token use and
/// reloads the tokens. While the database is unreachable the last table
/// stays in force (nothing can be revoked then either).
pub async fn refresh_admin_tokens_until(service: Arc<ControlPlane>, stop: CancellationToken) {
    let mut failing = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(ADMIN_TOKEN_RELOAD_INTERVAL) => {}
        }
        service.flush_admin_token_use().await;
        match service.reload_admin_tokens().await {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("admin tokens reloaded again");
            }
            Ok(()) => {}
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(%error, "admin tokens could not be reloaded; the last ones read stay in force");
            }
            Err(_) => {}
        }
    }
    service.flush_admin_token_use().await;
    tracing::debug!("admin token refresh stopped");
}
