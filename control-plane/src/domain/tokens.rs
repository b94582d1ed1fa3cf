//! Agent tokens: minted here with the newest token key
//! ([`super::signing_keys`], family `Token`), verified by workers offline
//! with the public keys the control plane publishes (`token_keys/<kid>`).
//!
//! A token is a secret: it is returned once, never stored, never logged.
//! Its mint is audited (`token.mint`, target the token id, with org, agent,
//! scopes, expiry and key id: never the token).

use super::ControlPlane;
use super::audit::AuditOutcome;
use super::config::effective_from_rows;
use super::types::{OrgId, Scopes};
use crate::auth::AdminActor;
use crate::error::{ControlPlaneError, Result};
use crate::store::KeyFamily;
use memtrace_common::receipt::PublicKeyInfo;
use memtrace_common::token::{self, Claims, DEFAULT_TTL_SECONDS, MAX_AGENT_LEN};
use serde_json::json;
use zeroize::Zeroizing;

/// A validated mint request.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    pub org_id: OrgId,
    pub agent: Option<String>,
    pub scopes: Scopes,
    /// Lifetime in seconds; `None`: [`DEFAULT_TTL_SECONDS`].
    pub ttl_seconds: Option<i64>,
}

impl TokenSpec {
    /// `agent` empty: not bound; `scopes` empty: read and write; `ttl` 0:
    /// the default. An agent-bound token may not carry `admin`.
    pub fn parse<S: AsRef<str>>(
        org_id: &str,
        agent: &str,
        scopes: &[S],
        ttl_seconds: u64,
    ) -> Result<Self> {
        let agent = agent.trim();
        if agent.len() > MAX_AGENT_LEN || agent.chars().any(char::is_control) {
            return Err(ControlPlaneError::invalid(
                "agent",
                format!("must be at most {MAX_AGENT_LEN} bytes without control characters"),
            ));
        }
        let scopes = Scopes::parse(scopes)?;
        if scopes.admin && !agent.is_empty() {
            return Err(ControlPlaneError::invalid(
                "scopes",
                "an agent-bound token cannot carry admin (admin mints tokens for any agent)",
            ));
        }
        let ttl_seconds = match ttl_seconds {
            0 => None,
            n => Some(i64::try_from(n).map_err(|_| {
                ControlPlaneError::invalid("ttl_seconds", "is larger than the maximum")
            })?),
        };
        Ok(Self {
            org_id: OrgId::parse(org_id)?,
            agent: (!agent.is_empty()).then(|| agent.to_owned()),
            scopes,
            ttl_seconds,
        })
    }
}

/// A freshly minted token: `token` exists nowhere else.
#[derive(Debug)]
pub struct MintedToken {
    pub token: Zeroizing<String>,
    pub claims: Claims,
    pub key_id: String,
}

impl ControlPlane {
    /// Mints a token for a live org, its lifetime at most the org's
    /// `tokens.max_ttl_seconds`.
    pub async fn mint_token(&self, actor: &AdminActor, spec: &TokenSpec) -> Result<MintedToken> {
        let org = self.get_org(&spec.org_id).await?;
        let org_id = org.org.id;
        let (effective, _) = effective_from_rows(&self.store.list_settings().await?);
        let max = effective.token_max_ttl_seconds(Some(&org_id));
        let ttl = spec.ttl_seconds.unwrap_or(DEFAULT_TTL_SECONDS.min(max));
        if ttl > max {
            return Err(ControlPlaneError::invalid(
                "ttl_seconds",
                format!("{ttl} exceeds tokens.max_ttl_seconds ({max}) for org {org_id}"),
            ));
        }
        let first = self
            .store
            .list_signing_keys(KeyFamily::Token)
            .await?
            .is_empty();
        let key = self.token_keys().current_key().await?;
        if first {
            // the key created just now: workers need it before the token
            self.publish_token_keys().await;
        }
        let iat = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second())
            .map_err(|e| ControlPlaneError::Unavailable(format!("clock: {e}")))?;
        let exp = iat
            .checked_add(jiff::SignedDuration::from_secs(ttl))
            .map_err(|_| ControlPlaneError::invalid("ttl_seconds", "is out of range"))?;
        let claims = Claims {
            org: org_id.clone(),
            agent: spec.agent.clone(),
            scopes: spec.scopes.names(),
            iat,
            exp,
            jti: token::new_token_id(),
        };
        let minted = token::mint(&key, &claims)
            .map_err(|e| ControlPlaneError::invalid("token", e.to_string()))?;
        let details = json!({
            "org_id": org_id, "agent": claims.agent, "scopes": claims.scopes,
            "expires_at": claims.exp.to_string(), "key_id": key.key_id(),
        });
        self.record_audit(actor, "token.mint", &claims.jti, AuditOutcome::Ok, details)
            .await?;
        tracing::info!(token_id = %claims.jti, %org_id, agent = ?claims.agent, key_id = key.key_id(), "agent token minted");
        Ok(MintedToken {
            token: Zeroizing::new(minted),
            claims,
            key_id: key.key_id().to_owned(),
        })
    }

    /// Adds the next token key version (signs from now on; the older ones
    /// keep verifying what they signed) and publishes it.
    pub async fn rotate_token_key(&self, actor: &AdminActor) -> Result<PublicKeyInfo> {
        let key = self.token_keys().rotate(actor).await?;
        self.publish_token_keys().await;
        Ok(key)
    }

    /// The public keys workers verify tokens with: the control plane's
    /// (`tk_N`, authenticated by their sealed seeds) and the workers'
    /// (`wk_…`, derived from each fleet key held).
    pub async fn published_token_keys(&self) -> Result<Vec<PublicKeyInfo>> {
        let mut keys = self.token_keys().public_keys().await?;
        for fleet in self.publisher.fleet().keys() {
            let key = fleet.token_key();
            keys.push(PublicKeyInfo {
                key_id: key.key_id().to_owned(),
                algorithm: memtrace_common::receipt::ALGORITHM.to_owned(),
                public_key: key.public_key_base64(),
                fingerprint: memtrace_common::receipt::fingerprint(&key.public_key()),
                created_at: None,
                retired_at: None,
            });
        }
        Ok(keys)
    }

    /// Publishes every token key's public half (what the database holds).
    pub(crate) async fn publish_token_keys(&self) -> Option<i64> {
        let keys: Vec<String> = match self.store.list_signing_keys(KeyFamily::Token).await {
            Ok(rows) => rows
                .iter()
                .map(|row| self.state_keys().token_key(&row.key_id))
                .collect(),
            Err(error) => {
                tracing::warn!(%error, "token keys not listed; the reconciler will publish them");
                self.publisher.defer();
                return None;
            }
        };
        self.publish_fresh(&keys).await
    }
}
